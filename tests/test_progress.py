"""Progress in logs: where stderr is not a terminal, a line with the count and the time left."""
from surf_dist.io import progress
def test_a_log_gets_lines_with_the_count_and_the_time_left(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    bar = progress.bar(range(2, 5), "train", True, total=5, initial=2)
    seen = []
    for step in bar:
        bar.set_postfix(loss=f"{step / 10:.1f}")
        seen.append(step)
    assert seen == [2, 3, 4]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["train: 3/5", "train: 4/5", "train: 5/5"]
    assert "left" in lines[0] and lines[-1].endswith("(loss=0.4)")


def test_nothing_is_printed_when_progress_is_off(capsys):
    assert list(progress.bar(range(3), "train", False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
