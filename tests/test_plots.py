"""metrics.png shows ε by round for DP runs, with integer round ticks."""

from __future__ import annotations

import matplotlib.pyplot as plt

from fedkd import plots


def _rows(private: bool):
    rows = []
    for r in range(1, 4):
        row = {
            "round": r,
            "student_accuracy": 0.5,
            "teacher_accuracy": 0.6,
            "bytes_up": 10,
            "bytes_down": 20,
        }
        if private:
            row.update(epsilon_example=0.5 * r, accountant="pld", epsilon_guarantee=True)
        rows.append(row)
    return rows


def test_a_dp_run_gets_an_epsilon_panel_and_a_plain_run_does_not(tmp_path, monkeypatch):
    made = []
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    plots.plot_run(_rows(True), tmp_path / "dp.png")
    plots.plot_run(_rows(False), tmp_path / "plain.png")
    dp_axes, plain_axes = made[0][1], made[1][1]
    assert len(dp_axes) == 3 and len(plain_axes) == 2
    eps_line = dp_axes[2].get_lines()[0]
    assert list(eps_line.get_ydata()) == [0.5, 1.0, 1.5]
    assert "PLD" in dp_axes[2].get_title()
    assert all(float(t).is_integer() for t in dp_axes[0].get_xticks())
    assert (tmp_path / "dp.png").stat().st_size > 0
