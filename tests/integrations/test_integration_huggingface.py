"""Hugging Face: export through the classifier head, the Trainer callback, dataset.select.

Tiny models built from configs (nothing is downloaded), trained on
scikit-learn's digits read as sequences of pixel tokens.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
pytest.importorskip("sklearn")

import torch  # noqa: E402
import transformers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import gradscore  # noqa: E402
from gradscore import GradscoreError  # noqa: E402
from gradscore.integrations import keep_indices  # noqa: E402
from gradscore.integrations.huggingface import (  # noqa: E402
    GradscoreTrainerCallback, dataset_ids, export_epoch)
from gradscore.schedule import DropSchedule  # noqa: E402

N = 500


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def digits_tokens(n=N, *, str_ids=False, ragged=False, seed=0):
    """Each digit as 64 tokens (pixel value + 1; 0 is padding)."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:n].astype(np.int64) + 1, y[:n]
    mask = np.ones_like(x)
    if ragged:  # right padding to random lengths, for last-token heads
        lengths = np.random.default_rng(seed).integers(40, 65, size=n)
        mask = (np.arange(64)[None, :] < lengths[:, None]).astype(np.int64)
        x = x * mask
    ids = [f"digit-{i:04d}" for i in range(n)] if str_ids else list(range(n))
    return datasets.Dataset.from_dict({"id": ids, "input_ids": x.tolist(),
                                       "attention_mask": mask.tolist(),
                                       "label": y.tolist()})


def tiny_bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=18, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64, num_labels=10)
    return transformers.BertForSequenceClassification(cfg)


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=18, n_embd=32, n_layer=1, n_head=2,
                                  n_positions=64, num_labels=10, pad_token_id=0)
    return transformers.GPT2ForSequenceClassification(cfg)


def _batch(ds):
    return {k: torch.tensor(ds[k]) for k in ("input_ids", "attention_mask")}


def test_export_pooled_head_matches_the_model(tmp_path):
    model = tiny_bert()
    ds = digits_tokens(100, str_ids=True)
    model.train()
    path = export_epoch(model, ds, str(tmp_path / "e.h5"), id_column="id", batch_size=32,
                        epoch=3)
    assert model.training and model.bert.training  # modes restored
    ep = gradscore.read_epoch(path)
    model.eval()
    with torch.no_grad():
        out = model.bert(**_batch(ds))
        logits = model(**_batch(ds)).logits
    # Rows come back sorted by id; these ids sort in row order.
    assert ep.ids.tolist() == ds["id"] and ep.epoch == 3
    np.testing.assert_array_equal(ep.labels, ds["label"])
    np.testing.assert_allclose(ep.features, out.pooler_output.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ep.logits, logits.numpy(), rtol=1e-5, atol=1e-6)


def test_export_last_token_head_takes_the_token_the_model_scores(tmp_path):
    model = tiny_gpt2().eval()
    ds = digits_tokens(90, ragged=True)
    path = export_epoch(model, ds, str(tmp_path / "e.h5"), batch_size=16)
    ep = gradscore.read_epoch(path)
    b = _batch(ds)
    with torch.no_grad():
        hidden = model.transformer(**b).last_hidden_state
        logits = model(**b).logits
    last = b["attention_mask"].sum(dim=1) - 1  # the last real token of each row
    ref = hidden[torch.arange(90), last]
    np.testing.assert_allclose(ep.features, ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ep.logits, logits.numpy(), rtol=1e-5, atol=1e-6)
    # The head's own weights reproduce the logits from the exported features.
    w = model.score.weight.detach().numpy()
    np.testing.assert_allclose(ep.features @ w.T, ep.logits, rtol=1e-4, atol=1e-5)


def test_export_errors(tmp_path):
    model = tiny_bert()
    ds = digits_tokens(10)
    with pytest.raises(GradscoreError, match="label_column 'labels' is not a column"):
        export_epoch(model, ds, str(tmp_path / "e.h5"), label_column="labels")
    with pytest.raises(GradscoreError, match="id_column 'name' is not a column"):
        export_epoch(model, ds, str(tmp_path / "e.h5"), id_column="name")
    with pytest.raises(GradscoreError, match="'bert.embeddings' is a BertEmbeddings"):
        export_epoch(model, ds, str(tmp_path / "e.h5"), layer="bert.embeddings")
    ragged = ds.map(lambda r, i: {"input_ids": r["input_ids"][: 30 + i]}, with_indices=True,
                    remove_columns=["attention_mask"])
    with pytest.raises(GradscoreError, match="cannot stack columns \\['input_ids'\\]"):
        export_epoch(model, ragged, str(tmp_path / "e.h5"))
    assert not os.path.exists(tmp_path / "e.h5")


class Recording(torch.utils.data.Dataset):
    """The dataset, noting every row the Trainer reads by index."""

    def __init__(self, ds):
        self.ds, self.log = ds, []
        self.column_names = ds.column_names

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            self.log.append(int(i))
        return self.ds[i]


class EpochMarks(transformers.TrainerCallback):
    def __init__(self, rec):
        self.rec, self.marks = rec, []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.marks.append(len(self.rec.log))


def _args(tmp_path, epochs):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), num_train_epochs=epochs,
        per_device_train_batch_size=32, learning_rate=2e-3, seed=0, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
        dataloader_num_workers=0)


def test_trainer_epochs_after_scoring_see_exactly_the_kept_rows(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rec = Recording(digits_tokens(str_ids=True))
    schedule = DropSchedule(warmup=1, freq=1, stop=2, state_path=str(run / "schedule.json"),
                            fraction=0.2)
    callback = GradscoreTrainerCallback(rec, str(run), schedule=schedule, id_column="id")
    marks = EpochMarks(rec)
    trainer = transformers.Trainer(model=tiny_bert(), args=_args(tmp_path, 3),
                                   train_dataset=callback.train_dataset,
                                   callbacks=[marks, callback])
    trainer.train()
    assert schedule.done == [1, 2]
    keep1 = gradscore.read_keeplist(str(run / "epoch_001.keep.txt"))
    keep2 = gradscore.read_keeplist(str(run / "epoch_002.keep.txt"))
    assert 0 < keep2.size < keep1.size < N and set(keep2) <= set(keep1)
    bounds = marks.marks + [len(rec.log)]
    ids = np.array(rec.ds["id"], dtype=object)
    seen = [sorted(ids[rec.log[a:b]].tolist()) for a, b in zip(bounds, bounds[1:])]
    assert len(seen) == 3
    assert seen[0] == sorted(ids.tolist())
    assert seen[1] == keep1.tolist()
    assert seen[2] == keep2.tolist()
    assert len(callback.train_dataset) == keep2.size


def test_keep_indices_selects_the_kept_rows(tmp_path):
    ds = digits_tokens(200, str_ids=True)
    path = export_epoch(tiny_bert(), ds, str(tmp_path / "e.h5"), id_column="id")
    gradscore.score_files(path, output=str(tmp_path / "keep.txt"), fraction=0.2)
    keep = gradscore.read_keeplist(str(tmp_path / "keep.txt"))
    kept = ds.select(keep_indices(dataset_ids(ds, "id"), keep))
    assert sorted(kept["id"]) == keep.tolist() and 0 < len(kept) < 200
    assert dataset_ids(ds).tolist() == list(range(200))


def test_trainer_resumes_from_its_checkpoint_and_the_state_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    state = str(run / "schedule.json")
    ds = digits_tokens(300, str_ids=True)
    args = _args(tmp_path, 2)
    args.save_strategy = "epoch"
    schedule = DropSchedule(warmup=1, freq=1, stop=3, state_path=state, fraction=0.2)
    callback = GradscoreTrainerCallback(ds, str(run), schedule=schedule, id_column="id")
    transformers.Trainer(model=tiny_bert(), args=args, train_dataset=callback.train_dataset,
                         callbacks=[callback]).train()
    keep2 = schedule.keep_ids.copy()
    assert schedule.done == [1, 2]
    ckpts = sorted((tmp_path / "trainer").glob("checkpoint-*"),
                   key=lambda p: int(p.name.split("-")[1]))

    # A new process: the schedule comes back from its state file, the model and
    # the Trainer's position from the last checkpoint (end of epoch 2).
    rec = Recording(ds)
    schedule = DropSchedule(warmup=1, freq=1, stop=3, state_path=state, fraction=0.2)
    callback = GradscoreTrainerCallback(rec, str(run), schedule=schedule, id_column="id")
    marks = EpochMarks(rec)
    args = _args(tmp_path, 3)
    transformers.Trainer(model=tiny_bert(), args=args, train_dataset=callback.train_dataset,
                         callbacks=[marks, callback]).train(resume_from_checkpoint=str(ckpts[-1]))
    assert schedule.done == [1, 2, 3]
    ids = np.array(ds["id"], dtype=object)
    assert len(marks.marks) == 1  # only epoch 3 ran
    assert sorted(ids[rec.log[marks.marks[0]:]].tolist()) == keep2.tolist()
    assert set(schedule.keep_ids) <= set(keep2)


def test_trajectory_schedule_exports_epoch_0_as_its_reference(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    schedule = DropSchedule(warmup=1, freq=1, stop=1, method="trajectory")
    callback = GradscoreTrainerCallback(digits_tokens(str_ids=True), str(run),
                                        schedule=schedule, id_column="id")
    trainer = transformers.Trainer(model=tiny_bert(), args=_args(tmp_path, 1),
                                   train_dataset=callback.train_dataset, callbacks=[callback])
    # A freshly initialised classifier knows nothing yet: the method says so.
    with pytest.warns(gradscore.GradscoreWarning, match="reference export gives only"):
        trainer.train()
    ref = str(run / "epoch_000.h5")
    assert callback.exports == [ref, str(run / "epoch_001.h5")]
    assert schedule.reference == [ref] and schedule.done == [1]
