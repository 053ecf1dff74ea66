"""The segmentation speed tool measures every model of the suite (tiny data, one round)."""

from tools import segmentation_speed


def test_every_suite_model_gets_a_rate(capsys):
    args = ["--rounds", "1", "--steps", "1", "--threads", "1", "data=canvas_digits",
            "data.canvas_size=32", "data.item_size=12", "data.batch_size=4"]  # fmt: skip
    assert segmentation_speed.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(segmentation_speed.EXPERIMENTS)
    assert all(float(line.split()[1]) > 0 for line in lines)
