"""Report sentences with the labels a CheXpert-style labeler should give, written for testing only.

Each case is ``(text, {observation: 1|0|-1})`` listing the mentioned observations (No Finding excluded; it is
derived by ``with_no_finding`` and tested separately). The expectations follow the CheXpert conventions: a
mention is positive unless negated or uncertain; "no change in X" keeps X positive; normal heart size is a
negative Cardiomegaly mention; "lungs are clear" mentions nothing; pulmonary vascular congestion is Edema; devices
are Support Devices.

- ``DEVELOPMENT``: written alongside the rules; failures here were fixed in the rules, so its accuracy is not an
  unbiased estimate.
- ``BLIND``: written after the first version and scored before any rule was changed for it (first look: 55 of 60
  sentences exactly right, 93.9% of sentence-observation pairs); some of its failures were fixed afterwards.
- ``BLIND_REPORTS``: 20 multi-sentence reports written after the rules had been tuned on the sets above, scored
  before any change for them (first look: 19 of 20 reports exactly right, 48 of 49 report-observation pairs, 98.0%);
  the one miss ("widened, likely due to AP technique") was fixed afterwards.
- ``BLIND_IU``: 20 IU X-ray style reports written last, scored before any change for them (first look: 17 of 20
  reports exactly right, 29 of 33 report-observation pairs, 87.9%); the three misses were fixed afterwards.
"""

from __future__ import annotations

EC, CM, LO, LL = "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion"
ED, CO, PN, AT = "Edema", "Consolidation", "Pneumonia", "Atelectasis"
PX, PE, PO, FR, SD = "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"
P, N, U = 1, 0, -1

DEVELOPMENT: list[tuple[str, dict[str, int]]] = [
    # Plain positives, laterality, severity, plurals.
    ("Small left pleural effusion.", {PE: P}),
    ("Moderate bilateral pleural effusions, right greater than left.", {PE: P}),
    ("Large right-sided effusion.", {PE: P}),
    ("Bibasilar atelectases.", {AT: P}),
    ("Subsegmental atelectasis at the left base.", {AT: P}),
    ("Mild cardiomegaly.", {CM: P}),
    ("The heart is mildly enlarged.", {CM: P}),
    ("Enlarged cardiac silhouette.", {CM: P}),
    ("Moderate enlargement of the cardiac silhouette.", {CM: P}),
    ("The cardiac silhouette is enlarged.", {CM: P}),
    ("Widened mediastinum.", {EC: P}),
    ("The mediastinum is widened.", {EC: P}),
    ("Mediastinal widening is again noted.", {EC: P}),
    ("Right upper lobe consolidation.", {CO: P}),
    ("Dense consolidations in both lower lobes.", {CO: P}),
    ("Patchy opacities in the right lower lobe.", {LO: P}),
    ("Hazy opacification of the left hemithorax.", {LO: P}),
    ("Bilateral interstitial infiltrates.", {LO: P}),
    ("Right lower lobe pneumonia.", {PN: P}),
    ("Small apical pneumothorax on the right.", {PX: P}),
    ("Tiny left pneumothorax is unchanged.", {PX: P}),
    ("Moderate pulmonary edema.", {ED: P}),
    ("Mild interstitial edema.", {ED: P}),
    ("Mild pulmonary vascular congestion.", {ED: P}),
    ("There is vascular congestion.", {ED: P}),
    ("A 1.5 cm nodule in the right upper lobe.", {LL: P}),
    ("Multiple pulmonary nodules.", {LL: P}),
    ("Left hilar mass.", {LL: P}),
    ("Old healed right rib fractures.", {FR: P}),
    ("Acute fracture of the left clavicle.", {FR: P}),
    ("Right pleural thickening.", {PO: P}),
    ("Biapical pleural thickening.", {PO: P}),
    ("Calcified pleural plaques.", {PO: P}),
    # Support devices.
    ("ET tube in standard position.", {SD: P}),
    ("The endotracheal tube terminates 4 cm above the carina.", {SD: P}),
    ("Right PICC line with tip in the SVC.", {SD: P}),
    ("Left-sided pacemaker with leads in the right atrium and ventricle.", {SD: P}),
    ("Dual-lead pacemaker is again seen.", {SD: P}),
    ("Nasogastric tube courses below the diaphragm.", {SD: P}),
    ("Right internal jugular central venous catheter ends in the SVC.", {SD: P}),
    ("Median sternotomy wires are intact.", {SD: P}),
    ("A right chest tube is in place.", {SD: P}),
    ("Enteric tube tip in the stomach.", {SD: P}),
    ("The ET tube has been removed.", {SD: N}),
    # Negation, including lists.
    ("No pleural effusion.", {PE: N}),
    ("No pneumothorax or effusion.", {PX: N, PE: N}),
    ("No focal consolidation, pleural effusion, or pneumothorax.", {CO: N, PE: N, PX: N}),
    ("There is no pneumothorax.", {PX: N}),
    ("No evidence of pneumonia.", {PN: N}),
    ("No definite focal consolidation.", {CO: N}),
    ("Without evidence of edema.", {ED: N}),
    ("The lungs are clear without consolidation or edema.", {CO: N, ED: N}),
    ("Lungs are free of focal opacities.", {LO: N}),
    ("Negative for pneumothorax.", {PX: N}),
    ("Pneumothorax is not seen.", {PX: N}),
    ("Pleural effusions are not identified.", {PE: N}),
    ("Consolidation and effusion are not present.", {CO: N, PE: N}),
    ("The previously seen effusion has resolved.", {PE: N}),
    ("Resolution of the right lower lobe pneumonia.", {PN: N}),
    ("No acute fracture.", {FR: N}),
    ("No displaced rib fractures.", {FR: N}),
    ("No pulmonary nodules or masses.", {LL: N}),
    ("No pulmonary edema.", {ED: N}),
    ("No evidence of vascular congestion.", {ED: N}),
    ("No pleural thickening.", {PO: N}),
    ("The heart is not enlarged.", {CM: N}),
    ("Pneumothorax is no longer visualized.", {PX: N}),
    # Normal heart and mediastinum phrases; "lungs are clear" mentions nothing.
    ("Heart size is normal.", {CM: N}),
    ("Normal heart size.", {CM: N}),
    ("The cardiac silhouette is within normal limits.", {CM: N}),
    ("The heart is normal in size.", {CM: N}),
    ("Normal cardiomediastinal silhouette.", {EC: N}),
    ("The cardiomediastinal silhouette is within normal limits.", {EC: N}),
    ("Cardiomediastinal contours are normal.", {EC: N}),
    ("The lungs are clear.", {}),
    ("No acute cardiopulmonary process.", {}),
    ("PA and lateral views of the chest were obtained.", {}),
    # Uncertainty.
    ("Possible small left effusion.", {PE: U}),
    ("Pneumonia cannot be excluded.", {PN: U}),
    ("Cannot exclude a small pneumothorax.", {PX: U}),
    ("Findings may represent atelectasis.", {AT: U}),
    ("Atelectasis versus pneumonia.", {AT: U, PN: U}),
    ("Left basilar opacity may represent atelectasis or pneumonia.", {LO: P, AT: U, PN: U}),
    ("Probable mild pulmonary edema.", {ED: U}),
    ("Findings are suspicious for pneumonia.", {PN: U}),
    ("Opacity concerning for pneumonia.", {LO: P, PN: U}),
    ("Questionable tiny right apical pneumothorax.", {PX: U}),
    ("Suggestion of a small right pleural effusion.", {PE: U}),
    ("Likely bibasilar atelectasis.", {AT: U}),
    ("Pneumonia is possible.", {PN: U}),
    ("Evaluate for pneumonia.", {PN: U}),
    ("Borderline cardiomegaly.", {CM: U}),
    ("Heart size is top normal.", {CM: U}),
    # Pseudo-negation: the finding persists.
    ("No change in the small left pleural effusion.", {PE: P}),
    ("No significant interval change in moderate cardiomegaly.", {CM: P}),
    ("No interval change in the right basilar atelectasis.", {AT: P}),
    # Negation scope ends at clause breakers and verbs.
    ("No pneumothorax, but there is a small right effusion.", {PX: N, PE: P}),
    ("No pneumothorax; small left effusion.", {PX: N, PE: P}),
    ("No effusion, and the heart is enlarged.", {PE: N, CM: P}),
    ("There is no pneumothorax and there is a small effusion.", {PX: N, PE: P}),
    ("No new consolidation, although atelectasis persists at the left base.", {CO: N, AT: P}),
    ("No pneumothorax. Small right pleural effusion.", {PX: N, PE: P}),
    ("Mild cardiomegaly without pulmonary edema.", {CM: P, ED: N}),
    ("Small effusion without pneumothorax.", {PE: P, PX: N}),
    ("No focal consolidation, possible small left effusion.", {CO: N, PE: U}),
    # Mixed reports.
    (
        "The heart is enlarged. There is a small left pleural effusion with adjacent atelectasis. "
        "No pneumothorax is seen.",
        {CM: P, PE: P, AT: P, PX: N},
    ),
    (
        "Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax. No acute osseous abnormality.",
        {CM: N, PE: N, PX: N},
    ),
    (
        "Interval placement of a right PICC line. Persistent bibasilar opacities, likely atelectasis. "
        "Stable moderate cardiomegaly.",
        {SD: P, LO: P, AT: U, CM: P},
    ),
    ("Severe cardiomegaly with pulmonary vascular congestion and bilateral effusions.", {CM: P, ED: P, PE: P}),
    ("Pacemaker in place. Otherwise no acute abnormality.", {SD: P}),
    ("Endotracheal and nasogastric tubes are in good position. No pneumothorax.", {SD: P, PX: N}),
    ("Pericardial effusion is suspected.", {}),
    # Circumstance words end a negation's scope; devices removed are negative.
    ("No acute cardiopulmonary process.", {}),
    ("Lines and tubes are unchanged in position.", {SD: P}),
    ("Left-sided Port-A-Cath terminates in the SVC.", {SD: P}),
    ("The lungs are well expanded and clear.", {}),
    (
        "There is no focal consolidation, pleural effusion, pneumothorax, or pulmonary edema.",
        {CO: N, PE: N, PX: N, ED: N},
    ),
    ("Interval removal of the endotracheal tube.", {SD: N}),
    ("Right lower lobe opacity concerning for pneumonia in the appropriate clinical setting.", {LO: P, PN: U}),
    ("Possible mild fluid overload.", {ED: U}),
    ("No evidence of free air beneath the diaphragm.", {}),
    ("Surgical clips in the right upper quadrant.", {SD: P}),
    ("Atelectasis has improved.", {AT: P}),
    ("No pneumothorax following placement of a right chest tube.", {PX: N, SD: P}),
    ("No pneumothorax after chest tube removal.", {PX: N, SD: N}),
    ("No pneumothorax with the chest tube in place.", {PX: N, SD: P}),
    ("The heart size is at the upper limits of normal.", {CM: U}),
    ("Mild enlargement of the cardiac silhouette is unchanged.", {CM: P}),
    ("Moderate cardiomegaly with a left ventricular configuration.", {CM: P}),
    ("No new focal opacity.", {LO: N}),
    ("No pleural effusions or pneumothoraces.", {PE: N, PX: N}),
    ("Trace left pleural fluid.", {PE: P}),
    ("Bilateral pleural effusions have increased.", {PE: P}),
    ("Pulmonary edema has improved but not resolved.", {ED: P}),
    ("Mild pulmonary edema, improved from prior.", {ED: P}),
    ("Left retrocardiac opacity likely reflects atelectasis though pneumonia is not excluded.", {LO: P, AT: U, PN: U}),
    ("There are small bilateral pleural effusions and mild pulmonary edema.", {PE: P, ED: P}),
    ("No displaced fracture is seen.", {FR: N}),
    ("Fractures of the left fifth and sixth ribs are again noted.", {FR: P}),
    ("Apparent widening of the mediastinum is likely due to patient rotation.", {EC: U}),
    ("Patchy right basilar airspace disease.", {LO: P}),
    ("No signs of pneumonia or edema.", {PN: N, ED: N}),
    (
        "Cardiomegaly, pulmonary edema, and bilateral pleural effusions are consistent with congestive heart failure.",
        {CM: P, ED: P, PE: P},
    ),
    ("Lungs are clear bilaterally with no evidence of consolidation.", {CO: N}),
    ("No definite acute osseous abnormality.", {}),
    ("Nodular opacity in the right upper lobe.", {LL: P, LO: P}),
    ("Swan-Ganz catheter has been removed.", {SD: N}),
    ("NG tube has been advanced and now terminates in the stomach.", {SD: P}),
    ("Heart size is difficult to assess.", {}),
    ("Right-sided pneumothorax is smaller.", {PX: P}),
    ("Persistent left lower lobe collapse.", {AT: P}),
    ("No evidence of mediastinal widening.", {EC: N}),
    # Heart and mediastinum described together.
    ("The heart size and mediastinal contours are within normal limits.", {CM: N, EC: N}),
    ("Heart size, mediastinal and hilar contours are normal.", {CM: N, EC: N}),
    ("The cardiomediastinal silhouette and hilar contours are normal.", {EC: N}),
    ("The heart and mediastinum are within normal limits.", {CM: N, EC: N}),
    ("The heart is moderately to severely enlarged.", {CM: P}),
    ("Normal size of the heart.", {CM: N}),
]

# A second set written after the labeler's first version and scored before any change was made to the rules in
# response to it: the first-look accuracy on this set is the number the labeler's report quotes. Phrasing follows
# typical MIMIC-CXR / IU X-ray reports.
BLIND: list[tuple[str, dict[str, int]]] = [
    ("Lungs are hyperinflated but clear.", {}),
    ("There is a moderate-sized left pleural effusion with overlying atelectasis.", {PE: P, AT: P}),
    ("Blunting of the right costophrenic angle may reflect a small effusion.", {PE: U}),
    ("Mild pulmonary vascular engorgement without frank edema.", {ED: P}),
    ("Interstitial markings are increased, suggesting mild interstitial edema.", {LO: P, ED: U}),
    ("Right middle lobe collapse.", {AT: P}),
    ("Left lower lobe volume loss and opacity, consistent with atelectasis.", {LO: P, AT: P}),
    ("Streaky left basilar opacity is most likely atelectasis.", {LO: P, AT: U}),
    ("No radiographic evidence of acute pneumonia.", {PN: N}),
    ("The cardiomediastinal and hilar contours are unremarkable.", {EC: N}),
    ("Stable mild enlargement of the cardiac silhouette.", {CM: P}),
    ("The heart size remains mildly enlarged.", {CM: P}),
    ("Heart size is within normal limits.", {CM: N}),
    ("Cardiac size is upper limits of normal.", {CM: U}),
    ("No large pleural effusion.", {PE: N}),
    ("Trace bilateral pleural effusions.", {PE: P}),
    ("Small right apical pneumothorax has decreased in size.", {PX: P}),
    ("There has been interval resolution of the left pneumothorax.", {PX: N}),
    ("Tracheostomy tube is in place.", {SD: P}),
    ("Swan-Ganz catheter tip projects over the right pulmonary artery.", {SD: P}),
    ("Left subclavian pacemaker leads terminate in the right ventricle.", {SD: P}),
    ("Sternal wires and mediastinal clips from prior CABG.", {SD: P}),
    ("Healing fracture of the left seventh rib.", {FR: P}),
    ("No acute displaced fracture is identified.", {FR: N}),
    ("Compression fractures of several thoracic vertebral bodies are unchanged.", {FR: P}),
    ("A spiculated nodule in the left upper lobe is concerning for malignancy.", {LL: P}),
    ("Irregular right hilar mass is again seen.", {LL: P}),
    ("Pleural-parenchymal scarring at the right apex.", {PO: P}),
    ("Mild bibasilar atelectasis is noted, without focal consolidation.", {AT: P, CO: N}),
    ("Multifocal consolidation is compatible with pneumonia.", {CO: P, PN: U}),
    ("Airspace disease in the right lower lobe, likely pneumonia.", {LO: P, PN: U}),
    (
        "Increased opacity at the left base could represent atelectasis, effusion, or consolidation.",
        {LO: P, AT: U, PE: U, CO: U},
    ),
    ("There is no focal airspace consolidation to suggest pneumonia.", {CO: N, PN: N}),
    ("No signs of congestive heart failure.", {ED: N}),
    ("Findings are consistent with pulmonary edema.", {ED: P}),
    ("Worsening bilateral perihilar opacities consistent with edema.", {LO: P, ED: P}),
    ("The right PICC has been removed.", {SD: N}),
    ("Nasogastric tube has been withdrawn and its tip now lies in the distal esophagus.", {SD: P}),
    ("Left chest tube remains in place and there is no residual pneumothorax.", {SD: P, PX: N}),
    ("Median sternotomy. The heart is normal in size.", {CM: N}),
    ("Mildly widened superior mediastinum likely due to vascular engorgement.", {EC: P, ED: U}),
    ("Pneumothorax is not excluded.", {PX: U}),
    ("Cannot rule out a small left pleural effusion.", {PE: U}),
    ("No pneumothorax, pleural effusion or focal consolidation is seen.", {PX: N, PE: N, CO: N}),
    ("No evidence of pulmonary nodules.", {LL: N}),
    ("Unchanged moderate cardiomegaly and small bilateral effusions.", {CM: P, PE: P}),
    ("Enlarged heart with pulmonary venous congestion.", {CM: P, ED: P}),
    ("Lungs are clear without focal consolidation, effusion, or edema.", {CO: N, PE: N, ED: N}),
    ("Lung volumes are low, which causes crowding of the bronchovascular markings.", {}),
    ("Possible trace left pleural effusion versus pleural thickening.", {PE: U, PO: U}),
    ("Elevated right hemidiaphragm with adjacent atelectasis.", {AT: P}),
    ("Hyperexpanded lungs with flattened diaphragms suggesting COPD.", {}),
    ("No acute osseous abnormalities.", {}),
    ("Degenerative changes of the thoracic spine.", {}),
    ("Extensive bilateral airspace opacities, compatible with ARDS.", {LO: P}),
    ("Postoperative widening of the mediastinum.", {EC: P}),
    ("Calcified granuloma in the right lower lobe.", {}),
    ("Right IJ line tip in the mid SVC. No pneumothorax.", {SD: P, PX: N}),
    ("Residual small left apical pneumothorax.", {PX: P}),
    ("Hazy opacity at the right base may be due to overlying soft tissue.", {LO: U}),
]

# Multi-sentence reports, written after the rules were tuned on the sets above (see the module docstring).
BLIND_REPORTS = [
    (
        "Frontal and lateral views of the chest. The lungs are clear without focal consolidation. No pleural effusion "
        "or pneumothorax. The cardiomediastinal silhouette is normal. Imaged osseous structures are intact.",
        {CO: N, PE: N, PX: N, EC: N},
    ),
    (
        "Single portable view. Endotracheal tube tip is 5 cm above the carina. Enteric tube courses into the stomach. "
        "Right IJ central line ends at the cavoatrial junction. Diffuse bilateral airspace opacities are unchanged. "
        "No pneumothorax.",
        {SD: P, LO: P, PX: N},
    ),
    (
        "Moderate cardiomegaly is stable. There is mild pulmonary vascular congestion without overt edema. Small "
        "bilateral pleural effusions with bibasilar atelectasis.",
        {CM: P, ED: P, PE: P, AT: P},
    ),
    (
        "Low lung volumes. Patchy opacity in the left lower lobe may reflect atelectasis, but infection cannot be "
        "excluded. No large effusion. Heart size is normal.",
        {LO: P, AT: U, PN: U, PE: N, CM: N},
    ),
    (
        "There has been interval removal of the right chest tube. A tiny residual apical pneumothorax is present. "
        "Subcutaneous emphysema along the right chest wall.",
        {SD: N, PX: P},
    ),
    (
        "Hyperinflated lungs consistent with emphysema. A 2 cm spiculated mass in the right upper lobe is concerning "
        "for malignancy. No effusion.",
        {LL: P, PE: N},
    ),
    (
        "Left-sided dual-chamber pacemaker with leads in the right atrium and right ventricle. The heart is "
        "top-normal in size. Lungs are clear.",
        {SD: P, CM: U},
    ),
    (
        "Right lower lobe consolidation compatible with pneumonia. Small right parapneumonic effusion.",
        {CO: P, PN: U, PE: P},
    ),
    ("No acute cardiopulmonary abnormality.", {}),
    (
        "Comparison is made to prior study. There is no significant change. The feeding tube has been removed. "
        "Persistent mild pulmonary edema.",
        {SD: N, ED: P},
    ),
    (
        "Multiple bilateral pulmonary nodules, the largest measuring 1.2 cm, consistent with metastatic disease.",
        {LL: P},
    ),
    ("Acute displaced fracture of the right clavicle. Old healed left rib fractures. No pneumothorax.", {FR: P, PX: N}),
    ("Mediastinal contours are widened, likely due to AP technique and low lung volumes.", {EC: U}),
    ("Blunting of the left costophrenic angle suggests a small effusion or pleural thickening.", {PE: P, PO: U}),
    (
        "The heart is enlarged. Pulmonary vasculature is engorged. Bilateral interstitial opacities suggest edema.",
        {CM: P, LO: P, ED: U},
    ),
    ("Resolved right upper lobe pneumonia. No new consolidation.", {PN: N, CO: N}),
    ("Increased density at the left base could represent atelectasis or early pneumonia.", {LO: P, AT: U, PN: U}),
    (
        "Nasogastric tube tip is in the proximal stomach. Sternotomy wires are intact. Mild cardiomegaly.",
        {SD: P, CM: P},
    ),
    ("No evidence of pneumothorax status post right thoracentesis. Small residual right effusion.", {PX: N, PE: P}),
    ("Lungs are clear. No pleural effusion. Normal cardiac silhouette. No fracture.", {PE: N, CM: N, FR: N}),
]

# IU X-ray style reports, written last (see the module docstring).
BLIND_IU = [
    ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.", {CM: N, EC: N}),
    (
        "Heart size and pulmonary vascularity appear within normal limits. No pneumothorax or pleural effusion is "
        "seen. There are no focal areas of consolidation.",
        {CM: N, PX: N, PE: N, CO: N},
    ),
    (
        "The cardiac silhouette is enlarged. There is prominence of the pulmonary vasculature. No focal airspace "
        "disease.",
        {CM: P, LO: N},
    ),
    ("Calcified granuloma in the left upper lobe. No acute disease.", {}),
    ("Stable right upper lobe scarring. No suspicious pulmonary mass or nodule.", {LL: N}),
    ("Degenerative changes of the thoracic spine. No acute bony abnormality.", {}),
    ("Mildly hyperexpanded lungs. Otherwise normal chest.", {}),
    ("Streaky left basilar airspace opacity most consistent with subsegmental atelectasis.", {LO: P, AT: P}),
    ("Borderline heart size. Tortuous aorta.", {CM: U}),
    ("There is a moderate right pleural effusion with associated compressive atelectasis.", {PE: P, AT: P}),
    ("No evidence of active disease.", {}),
    (
        "Interval development of bilateral lower lobe airspace disease concerning for multifocal pneumonia.",
        {LO: P, PN: U},
    ),
    ("Right-sided chest port with catheter tip in the superior vena cava.", {SD: P}),
    ("Cardiomediastinal silhouette within normal limits for size and contour.", {EC: N}),
    (
        "Lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, or pleural "
        "effusion.",
        {CO: N, PX: N, PE: N},
    ),
    ("Elevation of the right hemidiaphragm. Heart size normal.", {CM: N}),
    ("Mild interstitial prominence may reflect mild edema or atypical infection.", {LO: P, ED: U, PN: U}),
    ("Small nodular density in the right midlung may represent a nipple shadow.", {LL: U, LO: U}),
    ("Status post median sternotomy and CABG.", {}),
    ("Postsurgical changes from left upper lobectomy. No new airspace consolidation.", {CO: N}),
]
