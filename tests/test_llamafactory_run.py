"""The pieces around llamafactory-cli that the end-to-end run does not reach: reading its
trainer log while it is being written, and finding the error in its output."""

from orchestrator import llamafactory as lf


def test_trainer_log_leaves_a_half_written_line_for_later(tmp_path):
    log = tmp_path / "trainer_log.jsonl"
    log.write_text('{"current_steps": 1, "total_steps": 4, "loss": 2.5}\n{"current_steps": 2, "tot')
    assert [r["current_steps"] for r in lf.read_trainer_log(log)] == [1]
    assert lf.read_trainer_log(tmp_path / "missing.jsonl") == []


def test_error_lines_pick_the_exception_over_progress_noise(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "[INFO] loading\n"
        "Running tokenizer on dataset:  50%|#####     | 1/2 [00:01<00:01]\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "ValueError: Cannot find valid samples, check `data/README.md` for the data format.\n"
        "[rank0]: some trailing noise\n"
    )
    assert lf.error_lines(log) == ["ValueError: Cannot find valid samples, check `data/README.md` for the data format."]
    plain = tmp_path / "plain.log"
    plain.write_text("a\nb\nKilled\n")
    assert lf.error_lines(plain) == ["Killed"]
    assert lf.error_lines(tmp_path / "none.log") == ["(no log was written)"]


def test_phases_before_the_first_step_are_reported_once_and_a_quiet_spell_says_still(tmp_path):
    import time

    log = tmp_path / "train.log"
    log.write_text("[INFO] Loading dataset quickstart.jsonl...\n[INFO] loading weights fi")
    heard = []
    follower = lf.PhaseFollower(log, heard.append, quiet_s=0.2)
    follower.poll()
    assert heard == ["reading the dataset"]  # the half-written line waits
    with log.open("a") as handle:
        handle.write("le model.safetensors\n[INFO] Loading dataset again\n")
    follower.poll()
    assert heard == ["reading the dataset", "loading the model weights"]
    time.sleep(0.25)
    follower.poll()
    assert heard[-1].startswith("still loading the model weights (") and len(heard) == 3
    follower.poll(progressed=True)
    assert len(heard) == 3
