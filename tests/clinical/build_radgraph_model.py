"""Build a random-weight RadGraph model in the on-disk layout the ``radgraph`` package reads, fully offline.

Run with the RadGraph environment's Python (radgraph 0.1.18, transformers < 5), not himed's::

    RADGRAPH_PYTHON build_radgraph_model.py CACHE_DIR [--model-type radgraph-xl]

It writes ``CACHE_DIR/<model-type>/{config.json, vocabulary/, weights.th}`` - exactly what
``radgraph.RadGraph(model_type=..., model_cache_dir=CACHE_DIR)`` loads instead of downloading - and a tiny local
BERT (``CACHE_DIR/tiny-bert``) that config.json names as the encoder, so nothing is fetched from the hub. The model
is built with the package's own classes the way ``RadGraph.__init__`` builds it, so weights.th has the package's
real parameter names and loads with its ``strict=True``. The real radgraph-xl has a BERT encoder and DyGIE
heads of the same structure (DyGIE++ default hyper-parameters); only sizes and the encoder differ. One NER label
gets a large bias so the random model predicts entities and RadGraph F1 is not trivially zero.
"""

import argparse
import json
import os
import sys

import torch

# Labels of RadGraph (entities: 4 classes; relations: 3 types).
NER_LABELS = ["", "Anatomy::definitely present", "Observation::definitely present", "Observation::definitely absent",
              "Observation::uncertain"]  # fmt: skip
RELATION_LABELS = ["modify", "located_at", "suggestive_of"]
WORDS = ["no", "small", "left", "right", "pleural", "effusion", "pneumothorax", "heart", "is", "enlarged", "lungs",
         "are", "clear", "tube", "in", "place", "mild", "edema", ".", ","]  # fmt: skip


def build_tiny_bert(folder):
    from transformers import BertConfig, BertModel, BertTokenizer

    os.makedirs(folder, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *["##" + c for c in letters]]
    vocab_file = os.path.join(folder, "vocab.txt")
    with open(vocab_file, "w") as handle:
        handle.write("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file, do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)


def write_config(model_dir, bert_dir):
    bert = {"type": "pretrained_transformer_mismatched", "model_name": bert_dir, "max_length": 512}
    config = {
        "dataset_reader": {"type": "dygie", "token_indexers": {"bert": bert}, "max_span_width": 8},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": bert}},
            "initializer": {"regexes": [["_span_width_embedding.weight", {"type": "xavier_normal"}]]},
            "module_initializer": {"regexes": [[".*weight", {"type": "xavier_normal"}]]},
            "loss_weights": {"ner": 0.2, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "feature_size": 20,
            "max_span_width": 8,
            "target_task": "relation",
            "feedforward_params": {"num_layers": 2, "hidden_dims": 24, "dropout": 0.4},
            "modules": {
                "coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0},
                "ner": {},
                "relation": {"spans_per_word": 0.5},
                "events": {
                    "trigger_spans_per_word": 0.3,
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"trigger": 0.2, "arguments": 1.0},
                },  # fmt: skip
            },
        },
    }
    with open(os.path.join(model_dir, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)
    return config


def write_vocabulary(model_dir, model_type):
    folder = os.path.join(model_dir, "vocabulary")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "non_padded_namespaces.txt"), "w") as handle:
        handle.write("*tags\n*labels\n")
    # The reader names label namespaces after the dataset, which radgraph sets to the model type.
    with open(os.path.join(folder, model_type + "__ner_labels.txt"), "w") as handle:
        handle.write("\n".join(NER_LABELS) + "\n")
    with open(os.path.join(folder, model_type + "__relation_labels.txt"), "w") as handle:
        handle.write("\n".join(RELATION_LABELS) + "\n")
    return folder


def build_model(model_dir, config, vocab_dir):
    # The same construction as radgraph.RadGraph.__init__ (radgraph 0.1.18).
    from dotmap import DotMap
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    config = DotMap(config)
    vocab = Vocabulary.from_files(vocab_dir)
    bert = config.model.embedder.token_embedders.bert
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {
            "bert": token_embedders.PretrainedTransformerMismatchedEmbedder(
                model_name=bert.model_name, max_length=bert.max_length
            )
        }  # fmt: skip
    )
    model_dict = config.model
    for name in ["type", "embedder", "initializer", "module_initializer"]:
        del model_dict[name]
    torch.manual_seed(0)
    model = dygie.DyGIE(vocab=vocab, embedder=embedder, **model_dict)
    # Make the random NER head predict "Observation::definitely present" for short spans, so entities exist.
    state = model.state_dict()
    biases = [key for key in state if key.startswith("_ner._ner_scorers.") and key.endswith(".bias")]
    final_bias = sorted(biases)[-1]
    with torch.no_grad():
        state[final_bias][1] += 8.0
    torch.save(state, os.path.join(model_dir, "weights.th"))
    return sorted(state)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cache_dir")
    parser.add_argument("--model-type", default="radgraph-xl")
    args = parser.parse_args()
    bert_dir = os.path.join(os.path.abspath(args.cache_dir), "tiny-bert")
    model_dir = os.path.join(os.path.abspath(args.cache_dir), args.model_type)
    os.makedirs(model_dir, exist_ok=True)
    build_tiny_bert(bert_dir)
    config = write_config(model_dir, bert_dir)
    keys = build_model(model_dir, config, write_vocabulary(model_dir, args.model_type))
    json.dump({"model_dir": model_dir, "keys": keys}, sys.stdout)


if __name__ == "__main__":
    main()
