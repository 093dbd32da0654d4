"""The text reader: the exact line formats of nanoGPT, llm.c (stdout and main.log), the Hugging
Face Trainer's printed dicts, build-nanogpt, OLMo and a Keras-like epoch line; a user regex;
torn lines; files that are not logs; state round-trip."""

from __future__ import annotations

import math
from pathlib import Path, PurePath

import pytest
from pydantic import ValidationError

from lrwatch.sources.base import LogReader
from lrwatch.sources.text import TextConfig, TextReader, TextSource

Point = tuple[str, int, float]


def points(reader: TextReader) -> list[Point]:
    return [(s.metric, s.step, s.value) for s in reader.read()]


def append(path: Path, data: str) -> None:
    with path.open("a") as f:
        f.write(data)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "train.log"


def test_nanogpt(path: Path) -> None:
    # model.py/train.py of karpathy/nanoGPT: print(f"iter {iter_num}: loss {lossf:.4f}, ...")
    append(path, "iter 10: loss 2.3456, time 31.02ms, mfu 12.34%\n")
    append(path, "step 250: train loss 2.1000, val loss 2.2000\n")
    assert points(TextReader(path, "r")) == [
        ("loss", 10, 2.3456),
        ("time", 10, 31.02),
        ("mfu", 10, 12.34),
        ("train_loss", 250, 2.1),
        ("val_loss", 250, 2.2),
    ]


def test_llmc_stdout_keeps_nan(path: Path) -> None:
    # train_gpt2.cu's printf, as in reallogs/llmc_gpt2_nan_from_step1
    append(
        path,
        "step    1/19560 | train loss 11.009384 | norm 15.4310 | lr 1.71e-06 | 1234.56 ms"
        " | 34.5% bf16 MFU | 133950 tok/s\n"
        "step    2/19560 | loss     nan (+nanz)| norm    nan (+nanz)| lr 8.57e-07 | 3914.05 ms"
        " | 34.5% bf16 MFU | 133950 tok/s\n",
    )
    got = points(TextReader(path, "r"))
    assert got[:3] == [("train_loss", 1, 11.009384), ("norm", 1, 15.431), ("lr", 1, 1.71e-06)]
    assert [(m, s) for m, s, _ in got[3:]] == [("loss", 2), ("norm", 2), ("lr", 2)]
    assert math.isnan(got[3][2]) and math.isnan(got[4][2])


def test_llmc_main_log(path: Path) -> None:
    append(path, "s:0 tel:11.0095\ns:0 trl:11.0116 lr:0.000001 norm:14.96\ns:1 trl:nan\n")
    got = points(TextReader(path, "r"))
    assert got[:4] == [
        ("tel", 0, 11.0095),
        ("trl", 0, 11.0116),
        ("lr", 0, 1e-06),
        ("norm", 0, 14.96),
    ]
    assert got[4][:2] == ("trl", 1) and math.isnan(got[4][2])


def test_hugging_face_printed_dicts_count_as_steps(path: Path) -> None:
    append(
        path,
        "  5%|▌         | 1/20 [00:00<00:01]\n"
        "{'loss': 2.31, 'grad_norm': 1.2, 'learning_rate': 5e-05, 'epoch': 0.1}\n"
        "{'loss': nan, 'grad_norm': inf, 'learning_rate': 4e-05, 'epoch': 0.2}\n"
        "{'eval_loss': 2.5, 'eval_runtime': 0.1, 'epoch': 1.0}\n"
        "{'train_runtime': 3.2, 'train_loss': 2.4, 'epoch': 1.0}\n",  # the summary: skipped
    )
    reader = TextReader(path, "r")
    got = points(reader)
    assert got[:4] == [
        ("loss", 1, 2.31),
        ("grad_norm", 1, 1.2),
        ("learning_rate", 1, 5e-05),
        ("epoch", 1, 0.1),
    ]
    assert [(m, s) for m, s, _ in got[4:]] == [
        ("loss", 2), ("grad_norm", 2), ("learning_rate", 2), ("epoch", 2),
        ("eval_loss", 3), ("eval_runtime", 3), ("epoch", 3),
    ]  # fmt: skip
    assert math.isnan(got[4][2]) and got[5][2] == math.inf
    assert reader.stats["skipped_lines"] == 2  # the progress bar and the summary


def test_dict_lines_with_an_integer_step_key(path: Path) -> None:
    append(path, '{"train_lr": 0.001, "train_loss": 4.77, "epoch": 0, "n_parameters": 5}\n')
    append(path, "{'step': 7, 'loss': 1.5}\n")
    assert points(TextReader(path, "r")) == [
        ("train_lr", 0, 0.001),
        ("train_loss", 0, 4.77),
        ("n_parameters", 0, 5.0),
        ("loss", 7, 1.5),
    ]


def test_build_nanogpt_and_epoch_lines(path: Path) -> None:
    append(path, "0 val 10.9519\n0 hella 0.2487\n0 train 10.955011\n")
    append(path, "Epoch 3/100 - Train Loss: 4.0520, Val Loss: 3.2508\n")
    assert points(TextReader(path, "r")) == [
        ("val_loss", 0, 10.9519),
        ("hella", 0, 0.2487),
        ("train_loss", 0, 10.955011),
        ("train_loss", 3, 4.052),
        ("val_loss", 3, 3.2508),
    ]


def test_olmo_indented_metrics_belong_to_the_step_above(path: Path) -> None:
    append(
        path,
        "2025-12-11 00:27:01.586\thost:0\tolmo.train:979\tINFO\t[step=1/2500,epoch=0]\n"
        "    optim/total_grad_norm=11.55\n"
        "    train/CrossEntropyLoss=11.33\n"
        "    train/Perplexity=83,461\n"
        "2025-12-11 00:27:05.000\thost:0\tolmo.train:100\tINFO\tSaving checkpoint\n"
        "    not/a_metric=1\n",
    )
    assert points(TextReader(path, "r")) == [
        ("epoch", 1, 0.0),
        ("optim/total_grad_norm", 1, 11.55),
        ("train/CrossEntropyLoss", 1, 11.33),
        ("train/Perplexity", 1, 83461.0),
    ]


def test_a_user_regex_replaces_the_built_in_shapes(path: Path) -> None:
    append(path, "epoch=1 batch=3 objective: 0.75 acc=0.5\nstep 9 loss 1.0\n")
    reader = TextReader(path, "r", pattern=r"batch=(?P<step>\d+) objective: (?P<objective>\S+)")
    assert points(reader) == [("objective", 3, 0.75)]
    assert reader.stats["skipped_lines"] == 1


def test_a_regex_needs_a_metric_group() -> None:
    with pytest.raises(ValidationError, match="named group per metric"):
        TextConfig(pattern=r"step (?P<step>\d+)")
    with pytest.raises(ValidationError, match="not a valid regex"):
        TextConfig(pattern="(")


def test_a_torn_last_line_waits_for_its_newline(path: Path) -> None:
    append(path, "iter 1: loss 2.0\niter 2: lo")
    reader = TextReader(path, "r")
    assert points(reader) == [("loss", 1, 2.0)]
    assert points(reader) == []
    append(path, "ss 1.5\n")
    assert points(reader) == [("loss", 2, 1.5)]


def test_a_file_that_is_no_log_is_counted_once_and_left(path: Path) -> None:
    append(path, "".join(f"just some prose, line {i}\n" for i in range(30)))
    reader = TextReader(path, "r", probe_lines=20)
    assert points(reader) == []
    assert reader.stats["unrecognised_files"] == 1
    append(path, "iter 1: loss 2.0\n")  # no longer parsed: the file was judged
    assert points(reader) == []


def test_skipped_lines_do_not_condemn_a_log(path: Path) -> None:
    append(path, "loading...\n" * 5 + "iter 1: loss 2.0\n" + "noise\n" * 50)
    reader = TextReader(path, "r", probe_lines=20)
    assert points(reader) == [("loss", 1, 2.0)]
    assert reader.stats == {**reader.stats, "skipped_lines": 55, "unrecognised_files": 0}


def test_state_dict_round_trip(path: Path) -> None:
    append(path, "[step=1/9]\n    loss=2.0\n{'loss': 1.0}\n")
    reader = TextReader(path, "r")
    assert isinstance(reader, LogReader)
    reader.read()
    again = TextReader(path, "r")
    again.load_state_dict(reader.state_dict())
    append(path, "    lr=0.1\n{'loss': 0.5}\n")
    assert points(again) == [("lr", 1, 0.1), ("loss", 2, 0.5)]
    # The first epoch's number (0 or 1) carries over too: epoch 1 of a file counted from 0.
    append(path, "Epoch [0][10/10] loss: 2.0\n")
    again.read()
    resumed = TextReader(path, "r")
    resumed.load_state_dict(again.state_dict())
    append(path, "Epoch [1][10/10] loss: 1.0\n")
    assert points(resumed) == [("loss", 20, 1.0)]
    with pytest.raises(ValueError, match="epoch_base"):
        again.load_state_dict({**again.state_dict(), "epoch_base": 7})
    with pytest.raises(ValueError, match="step"):
        again.load_state_dict({**reader.state_dict(), "step": "x"})


def test_keras_progress_bars_give_each_epochs_finished_bar(path: Path) -> None:
    # Keras 3 (bold and colour codes, the bar redrawn after \r and backspaces) and tf.keras 2;
    # a running bar holds the mean of the epoch's first batches, only a finished one (6/6)
    # the epoch's metrics, at the step of the "Epoch k/N" line above it.
    bar = "\x1b[32m━━━━━━━━━━\x1b[0m"
    append(
        path,
        "Epoch 1/2\n"
        f"\r\x1b[1m1/6\x1b[0m {bar} \x1b[1m0s\x1b[0m 12ms/step - loss: 0.7297\x08\x08\x08\x08"
        f"\r\x1b[1m6/6\x1b[0m {bar} \x1b[1m0s\x1b[0m 7ms/step - accuracy: 0.5260 - loss: 0.6841"
        " - val_accuracy: 0.6406 - val_loss: 0.6056\n"
        "05/01 10:00:00 - a date is no progress bar\n"
        "Epoch 2/2\n"
        "  1/6 [====>.........................] - ETA: 0s - loss: 0.7000\x08\x08\x08\r"
        "6/6 [==============================] - 0s 7ms/step - loss: 0.6269 - val_loss: 0.5641\n"
        "6/6 - 0s - 4ms/step - loss: 0.5000\n",  # (verbose=2: a repeat of step 2, dropped later)
    )
    reader = TextReader(path, "r")
    assert points(reader) == [
        ("accuracy", 1, 0.526),
        ("loss", 1, 0.6841),
        ("val_accuracy", 1, 0.6406),
        ("val_loss", 1, 0.6056),
        ("loss", 2, 0.6269),
        ("val_loss", 2, 0.5641),
        ("loss", 2, 0.5),
    ]
    # the two epoch lines, the running bars and the date line
    assert reader.stats["skipped_lines"] == 5


def test_an_epoch_and_the_iteration_within_it_count_iterations(path: Path) -> None:
    # mmdetection 2.x, mmengine, Ignite: the iteration restarts every epoch, the step does not.
    append(
        path,
        "2024-05-01 10:00:00,000 - mmdet - INFO - Epoch [1][50/200]\tlr: 2.000e-02, loss: 1.9\n"
        "2024-05-01 10:00:00,000 - mmdet - INFO - Epoch [2][50/200]\tlr: 2.000e-02, loss: 1.8\n"
        "05/01 10:00:00 - mmengine - INFO - Epoch(train)  [3][ 50/200]  lr: 2.0e-02  loss: 1.7\n"
        "Epoch[3] Iteration[100/200] Loss: 1.65\n"
        "05/01 10:00:00 - mmengine - INFO - Iter(train) [  950/90000]  lr: 2.0e-02  loss: 1.6\n",
    )
    assert [(m, s) for m, s, _ in points(TextReader(path, "r"))] == [
        ("lr", 50), ("loss", 50), ("lr", 250), ("loss", 250),
        ("lr", 450), ("loss", 450), ("Loss", 500), ("lr", 950), ("loss", 950),
    ]  # fmt: skip


def test_pytorch_examples_timm_and_paddleocr_count_iterations_across_epochs(path: Path) -> None:
    # Each line as its source prints it; the iteration restarts every epoch, the step does not.
    append(
        path,
        # pytorch/examples imagenet/main.py: ProgressMeter, tab-separated "name value (mean)"
        "Epoch: [1][ 10/200]\tTime  0.512 ( 0.601)\tLoss 6.9077e+00 (6.9100e+00)\n"
        # timm train.py
        "Train: 1 [  20/200 ( 10%)]  Loss: 6.912 (6.93)  Time: 0.312s,  820.45/s  LR: 1.000e-03\n"
        # pytorch/examples word_language_model/main.py
        "| epoch   1 |    30/  200 batches | lr 20.00 | ms/batch 45.61 | loss  7.63 | ppl  2050\n"
        # pytorch/examples mnist/main.py: its count is of samples
        "Train Epoch: 1 [640/60000 (1%)]\tLoss: 2.276\n"
        # PaddleOCR: the epoch over the epochs, its global step the step
        "[2024/05/01 10:00:00] ppocr INFO: epoch: [2/500], global_step: 410, lr: 0.001000, "
        "loss: 2.345, avg_reader_cost: 0.01 s\n",
    )
    assert [(m, s) for m, s, _ in points(TextReader(path, "r"))] == [
        ("Time", 10), ("Loss", 10),
        ("Loss", 20), ("Time", 20), ("LR", 20),
        ("lr", 30), ("ms/batch", 30), ("loss", 30), ("ppl", 30),
        ("Loss", 640),
        ("lr", 410), ("loss", 410), ("avg_reader_cost", 410),
    ]  # fmt: skip


def test_a_tutorials_epoch_and_step_count_within_or_across_epochs(tmp_path: Path) -> None:
    # yunjey/pytorch-tutorial and its many heirs: the step restarts every epoch ...
    within = tmp_path / "within.log"
    append(
        within,
        "Epoch [1/2], Step [100/600], Loss: 0.5\nEpoch [1/2], Step [600/600], Loss: 0.4\n"
        "Epoch [2/2], Step [100/600], Loss: 0.3\nEpoch: 2, Batch: 200/600, Loss: 0.2\n",
    )
    assert [s for _, s, _ in points(TextReader(within, "r"))] == [100, 600, 700, 800]
    # ... or, in others, counts on over the epochs: then it is the step.
    across = tmp_path / "across.log"
    append(
        across,
        "Epoch [1/2], Step [300/1200], Loss: 0.5\nEpoch [1/2], Step [600/1200], Loss: 0.4\n"
        "Epoch [2/2], Step [900/1200], Loss: 0.3\n",
    )
    reader = TextReader(across, "r")
    assert [s for _, s, _ in points(reader)] == [300, 600, 900]
    resumed = TextReader(across, "r")  # (which it is carries over a restart)
    resumed.load_state_dict(reader.state_dict())
    append(across, "Epoch [2/2], Step [1200/1200], Loss: 0.2\n")
    assert [s for _, s, _ in points(resumed)] == [1200]
    with pytest.raises(ValueError, match="iter_at"):
        resumed.load_state_dict({**reader.state_dict(), "iter_at": [1]})


def test_progress_bars_read_each_value_at_the_count_it_was_first_drawn(path: Path) -> None:
    # tqdm redraws its bar as it advances, the postfix still the last batch's until the job
    # sets the new one (a stale draw); Lightning's TQDMProgressBar resets it every epoch.
    def tqdm(epoch: str, n: int, postfix: str) -> str:
        return f"\r{epoch}:  {100 * n // 4}%|##   | {n}/4 [00:00<00:00, 9.1it/s{postfix}]"

    append(
        path,
        tqdm("Epoch 0", 0, "")
        + tqdm("Epoch 0", 1, "")
        + tqdm("Epoch 0", 1, ", v_num=0, train_loss_step=2.5")
        + tqdm("Epoch 0", 2, ", v_num=0, train_loss_step=2.5")  # stale
        + tqdm("Epoch 0", 2, ", v_num=0, train_loss_step=2.4")
        + tqdm("Epoch 0", 4, ", v_num=0, train_loss_step=nan")
        + tqdm("Epoch 0", 4, ", v_num=0, train_loss_step=nan, val_loss=2.2")
        + tqdm("Epoch 0", 0, ", v_num=0, train_loss_step=nan, val_loss=2.2")  # the reset
        + tqdm("Epoch 1", 1, ", v_num=0, train_loss_step=nan, val_loss=2.2")  # stale
        + "\n"
        # rich's bar (Lightning's RichProgressBar); torchtune's bar is a step marker.
        + "Epoch 1/9  ━━━━━━━━━━━━ 3/4 0:00:01 • 0:00:01 9.10it/s v_num: 0 train_loss_step: 2.1\n"
        + "\r1|13|Loss: 1.404:  25%|##5       | 13/52 [00:01<00:03, 9.1it/s]\n",
    )
    got = [(m, s, v) for m, s, v in points(TextReader(path, "r")) if m != "v_num"]
    assert repr(got) == repr([  # (by repr: a NaN is no NaN's equal)
        ("train_loss_step", 1, 2.5),
        ("train_loss_step", 2, 2.4),
        ("train_loss_step", 4, math.nan),
        ("train_loss_step", 4, math.nan),
        ("val_loss", 4, 2.2),
        ("train_loss_step", 7, 2.1),  # (epoch 1 - 0) x 4 + 3
        ("Loss", 13, 1.404),
    ])  # fmt: skip


def test_megatron_validation_lines_are_named_as_its_tensorboard_tags(path: Path) -> None:
    # megatron/training/training.py, evaluate_and_print_results: "{key} value: {:.6E} | {key}
    # PPL: {:.6E} | " per loss, after " validation loss at iteration N[ on validation set] | "
    append(
        path,
        " [2024-05-01 10:00:00] iteration      100/  500000 | learning rate: 3.000000E-04 | "
        "lm loss: 7.123456E+00 | grad norm: 1.234 |\n"
        " validation loss at iteration 100 on validation set | lm loss value: 7.012345E+00 | "
        "lm loss PPL: 1.110000E+03 | \n",
    )
    assert points(TextReader(path, "r")) == [
        ("learning_rate", 100, 3e-4), ("lm_loss", 100, 7.123456), ("grad_norm", 100, 1.234),
        ("lm_loss_validation", 100, 7.012345),
    ]  # fmt: skip
    from lrwatch.protocol.types import Role
    from lrwatch.roles import RolesConfig

    assert RolesConfig().role_of("lm_loss_validation") is Role.VAL_LOSS


@pytest.mark.parametrize(
    "line",
    [
        # Megatron's validation that never says "value:": an unbounded run of words before it
        # made the regex backtrack quadratically (hours).
        "validation loss at iteration 5 | " + "ab " * 300_000,
        # fairseq's validation marker, repeated: read recursively, it raised RecursionError.
        "step 1 | " + "valid on 'x' subset " * 40_000,
    ],
    ids=["megatron", "fairseq"],
)
def test_a_hostile_line_is_read_in_time_linear_in_its_length(path: Path, line: str) -> None:
    import threading

    append(path, line + "\nstep 2 loss 1.0\n")
    reader = TextReader(path, "r")
    got: list[Point] = []
    worker = threading.Thread(target=lambda: got.extend(points(reader)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # (about 0.5 s; a failure must not hang the suite)
    assert not worker.is_alive(), "the reader is stuck on one line"
    assert got == [("loss", 2, 1.0)]


def test_a_table_printed_row_by_row_under_its_header(path: Path) -> None:
    # fastai's console output: the header, then a row per epoch (a progress bar between them)
    append(
        path,
        "epoch     train_loss  valid_loss  accuracy  time    \n"
        "0         0.523419    0.391521    0.830000  00:05     \n"
        "\r[██████----] 60.00% [3/5 00:03<00:02 0.4321]\n"
        "1         0.312345    #na#        0.850000  00:05     \n"
        "2 images seen in 5 s\n",  # not a row: not all numbers
    )
    reader = TextReader(path, "r")
    assert points(reader) == [
        ("train_loss", 0, 0.523419), ("valid_loss", 0, 0.391521), ("accuracy", 0, 0.83),
        ("train_loss", 1, 0.312345), ("accuracy", 1, 0.85),
    ]  # fmt: skip
    resumed = TextReader(path, "r")  # the header carries over a restart
    resumed.load_state_dict(reader.state_dict())
    append(path, "2         0.2         0.3         0.9       00:05     \n")
    assert points(resumed) == [("train_loss", 2, 0.2), ("valid_loss", 2, 0.3), ("accuracy", 2, 0.9)]
    with pytest.raises(ValueError, match="columns"):
        resumed.load_state_dict({**reader.state_dict(), "columns": "epoch loss"})
    with pytest.raises(ValueError, match="drawn"):
        resumed.load_state_dict({**reader.state_dict(), "drawn": {"loss": "1"}})


def test_epochs_counted_from_0_and_an_update_counter(tmp_path: Path) -> None:
    zero = tmp_path / "zero.log"
    append(zero, "Epoch [0][10/10] loss: 2.0\nEpoch [1][10/10] loss: 1.0\n")
    assert [s for _, s, _ in points(TextReader(zero, "r"))] == [10, 20]
    # fairseq: its num_updates is exact where an epoch's length varies, and no metric.
    fairseq = tmp_path / "fairseq.log"
    append(
        fairseq,
        "2024-05-01 | INFO | train_inner | epoch 002:     3 / 15 loss=9.71, num_updates=18, "
        "lr=0.0005, gnorm=3.3\n"
        "2024-05-01 | INFO | train | epoch 002 | loss 9.6 | num_updates 30 | lr 0.0005\n",
    )
    assert points(TextReader(fairseq, "r")) == [
        ("loss", 18, 9.71), ("lr", 18, 0.0005), ("gnorm", 18, 3.3),
        ("loss", 30, 9.6), ("lr", 30, 0.0005),
    ]  # fmt: skip


def test_fairseq_validation_and_json_lines(path: Path) -> None:
    # The simple format prints a validation under the training's names; --log-format json
    # prints dicts behind the logging prefix, the numbers quoted, the epoch not.
    append(
        path,
        "2024-05-01 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.562 | "
        "ppl 548.7 | num_updates 1000\n"
        '2024-05-01 | INFO | train_inner | {"epoch": 1, "loss": "14.232", "num_updates": "1100"}\n'
        '2024-05-01 | INFO | valid | {"epoch": 1, "valid_loss": "9.5", '
        '"valid_num_updates": "1200"}\n'
        "2024-05-01 | INFO | fairseq_cli.train | config: {'lr': 0.1}\n",  # no logged dict
    )
    reader = TextReader(path, "r")
    assert points(reader) == [
        ("valid_loss", 1000, 9.562), ("valid_ppl", 1000, 548.7),
        ("epoch", 1100, 1.0), ("loss", 1100, 14.232),
        ("epoch", 1200, 1.0), ("valid_loss", 1200, 9.5),
    ]  # fmt: skip
    assert reader.stats["skipped_lines"] == 1


@pytest.mark.parametrize(
    ("name", "claimed"),
    [
        ("train.log", True),
        ("log.txt", True),
        ("loss_log.txt", True),
        ("slurm-4242.out", True),
        ("README.txt", False),
        ("requirements.txt", False),
        ("LICENSE.txt", False),
        ("metrics.jsonl", False),
    ],
)
def test_claims(name: str, claimed: bool) -> None:
    assert TextSource().claims(PurePath("runs/a") / name) is claimed


def test_globs_are_configurable() -> None:
    source = TextSource(TextConfig(globs=("*.stdout",)))
    assert source.claims(PurePath("job.stdout")) and not source.claims(PurePath("train.log"))


def test_transformers_5_quotes_its_numbers(path: Path) -> None:
    # as printed by transformers 5.25's Trainer (captured from the integration test's job)
    append(
        path,
        "{'loss': '319.2', 'grad_norm': '354.4', 'learning_rate': '0.5', 'epoch': '0.125'}\n"
        "{'loss': 'nan', 'grad_norm': 'inf', 'learning_rate': '0.5', 'epoch': '1'}\n",
    )
    got = points(TextReader(path, "r"))
    assert [(m, s) for m, s, _ in got] == [
        ("loss", 1), ("grad_norm", 1), ("learning_rate", 1), ("epoch", 1),
        ("loss", 2), ("grad_norm", 2), ("learning_rate", 2), ("epoch", 2),
    ]  # fmt: skip
    assert got[0][2] == 319.2 and math.isnan(got[4][2]) and got[7][2] == 1.0


def test_the_sources_text_section_configures_the_source(tmp_path: Path) -> None:
    from lrwatch.sources.formats import build_formats
    from lrwatch.sources.layout import log_format, open_reader

    formats, problems = build_formats(
        {"text": {"globs": ["*.out"], "pattern": r"it (?P<step>\d+) obj (?P<obj>\S+)"}}
    )
    assert not problems
    assert log_format("run/job.out", formats=formats) == "text"
    assert log_format("run/train.log", formats=formats) is None
    job = tmp_path / "job.out"
    job.write_text("it 3 obj 0.5\n")
    reader = open_reader(tmp_path, job, formats=formats)
    assert [(s.metric, s.step, s.value) for s in reader.read()] == [("obj", 3, 0.5)]
    _, problems = build_formats({"text": {"pattern": "("}})
    assert problems and "not a valid regex" in problems[0].message
