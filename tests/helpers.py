"""Helpers shared by test files (fixtures live in conftest.py): the transformers parity data and its
runners, and tiny random models with a batch for them. Test files import this module, never each other."""
import json
import os

import numpy as np
import paddle

from visualbert import modeling as vm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
HF = os.path.join(FIXTURES, "hf")
ORIGINAL = os.path.join(FIXTURES, "original")
INPUTS = dict(np.load(os.path.join(FIXTURES, "inputs.npz")))
EXPECTED = dict(np.load(os.path.join(FIXTURES, "outputs.npz")))
TOL = 1e-5
# The transformers parity: tests/test_convert.py; the same through visualbert.cpu's layers: tests/test_cpu.py.


def batch(prefix=""):
    keys = ("input_ids", "attention_mask", "token_type_ids", "visual_embeds", "visual_attention_mask",
            "visual_token_type_ids")
    return {k: paddle.to_tensor(INPUTS[prefix + k]) for k in keys}


def tensor(name):
    return paddle.to_tensor(INPUTS[name])


def check(got, prefix):
    """Compare every output computed against every expected key under ``prefix``."""
    wanted = sorted(k for k in EXPECTED if k.startswith(prefix + "."))
    assert sorted(got) == wanted
    diffs = {k: float(np.abs(got[k].numpy() - EXPECTED[k]).max()) for k in wanted}
    assert max(diffs.values()) <= TOL, diffs
    return diffs


def run_base(model):
    got = {}
    o = model(**batch(), output_attentions=True, output_hidden_states=True)
    got["base.last_hidden_state"], got["base.pooler_output"] = o.last_hidden_state, o.pooler_output
    got.update({f"base.hidden_states.{i}": h for i, h in enumerate(o.hidden_states)})
    got.update({f"base.attentions.{i}": a for i, a in enumerate(o.attentions)})
    o = model(**batch(), image_text_alignment=tensor("image_text_alignment"))
    got["base.aligned.last_hidden_state"], got["base.aligned.pooler_output"] = o.last_hidden_state, o.pooler_output
    o = model(input_ids=tensor("input_ids"), attention_mask=tensor("attention_mask"),
              token_type_ids=tensor("token_type_ids"))
    got["base.text_only.last_hidden_state"], got["base.text_only.pooler_output"] = o.last_hidden_state, o.pooler_output
    o = model(**batch(), head_mask=tensor("head_mask"), output_attentions=True)
    got["base.head_masked.last_hidden_state"] = o.last_hidden_state
    got.update({f"base.head_masked.attentions.{i}": a for i, a in enumerate(o.attentions)})
    return got


def run_pretraining(model):
    o = model(**batch(), labels=tensor("mlm_labels"), sentence_image_labels=tensor("sentence_image_labels"))
    got = {"pretraining.prediction_logits": o.prediction_logits,
           "pretraining.seq_relationship_logits": o.seq_relationship_logits, "pretraining.loss": o.loss}
    got["pretraining.masked_lm_loss"] = model(**batch(), labels=tensor("mlm_labels")).loss
    return got


def run_vqa(model):
    return {"vqa.logits": model(**batch()).logits, "vqa.loss": model(**batch(), labels=tensor("vqa_targets")).loss}


def run_nlvr2(model):
    o = model(**batch(), labels=tensor("nlvr2_labels"))
    return {"nlvr2.logits": o.logits, "nlvr2.loss": o.loss}


def run_multiple_choice(model):
    o = model(**batch("mc_"), labels=tensor("mc_labels"))
    return {"multiple_choice.logits": o.logits, "multiple_choice.loss": o.loss}


def run_region_alignment(model):
    o = model(**batch(), region_to_phrase_position=tensor("region_to_phrase_position"), labels=tensor("region_labels"))
    return {"region_alignment.logits": o.logits, "region_alignment.loss": o.loss}


def run_bypass(model):
    o = model(**batch())
    return {"bypass.last_hidden_state": o.last_hidden_state, "bypass.pooler_output": o.pooler_output}


RUNNERS = {"base": run_base, "pretraining": run_pretraining, "vqa": run_vqa, "nlvr2": run_nlvr2,
           "multiple_choice": run_multiple_choice, "region_alignment": run_region_alignment, "bypass": run_bypass}


B, T, V, D = 2, 6, 3, 8


def tiny_model_config(**overrides):
    """A VisualBertConfig of a tiny model (in memory; conftest's ``tiny_config`` writes one to disk)."""
    fields = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=32, visual_embedding_dim=D, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    fields.update(overrides)
    return vm.VisualBertConfig(**fields)


def numpy_batch(seed=0):
    """What a numpy collator produces: padded text and regions, visual token types 0 and 1."""
    g = np.random.default_rng(seed)
    attention_mask = np.ones((B, T), np.int64)
    attention_mask[1, 4:] = 0
    visual_attention_mask = np.ones((B, V), np.int64)
    visual_attention_mask[0, 2:] = 0
    return dict(
        input_ids=g.integers(0, 50, (B, T)).astype(np.int64) * attention_mask,
        token_type_ids=np.zeros((B, T), np.int64),
        attention_mask=attention_mask,
        visual_embeds=g.standard_normal((B, V, D)).astype(np.float32),
        visual_token_type_ids=np.array([[0, 1, 1], [1, 1, 0]], np.int64),
        visual_attention_mask=visual_attention_mask,
    )


def tensors(batch):
    return {k: paddle.to_tensor(v) for k, v in batch.items()}


def make(cls, **overrides):
    paddle.seed(0)
    model = cls(tiny_model_config(**overrides))
    model.eval()
    return model


ALL_HEADS = [head.model for head in vm.HEADS.values()]


def write_json(path, payload):
    path.write_text(json.dumps(payload))
    return str(path)


def question_files(tmp_path, answers_per_question=None):
    """Two images, three questions; 10 human answers each."""
    answers_per_question = answers_per_question or {1: ["Yes"] * 7 + ["no"] * 3, 2: ["two"] * 6 + ["2"] * 4,
                                                    3: ["a dog"] * 10}
    questions = [{"image_id": 7, "question": "is it red?", "question_id": 1},
                 {"image_id": 7, "question": "how many?", "question_id": 2},
                 {"image_id": 12, "question": "what is it?", "question_id": 3}]
    annotations = [{"question_id": q["question_id"], "image_id": q["image_id"], "question_type": "what",
                    "answer_type": "other", "multiple_choice_answer": answers_per_question[q["question_id"]][0],
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                for i, a in enumerate(answers_per_question[q["question_id"]])]}
                   for q in questions]
    return (write_json(tmp_path / "q.json", {"questions": questions, "task_type": "Open-Ended"}),
            write_json(tmp_path / "a.json", {"annotations": annotations}))
