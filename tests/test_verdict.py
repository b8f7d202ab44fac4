"""The verdict of a run folder (bench/verdict.py) and its terminal view (bench/verdict_view.py), on a run folder
written here stage by stage: the figures are known, so every number of the verdict can be checked."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from cloakbench.bench import verdict as vd
from cloakbench.bench.store import write_rows

IDS = [f"subject{i}" for i in range(6)]
# (protection, purification, recipe, qes) -> ism per identity before noise; fdfr is 1 - ism
CELLS = {("none", "none", "db", 0): 0.70, ("advdm@8/255", "none", "db", 0): 0.30,
         ("advdm@8/255", "jpeg", "db", 0): 0.66, ("advdm@8/255", "none", "db-cdl", 0): 0.34,
         ("weak@8/255", "none", "db", 0): 0.70, ("weak@8/255", "jpeg", "db", 0): 0.72,
         # a red team whose gain swings by identity: its recovered share's interval cannot tell 0 % from 50 %
         ("aspl@8/255", "none", "db", 0): 0.30, ("aspl@8/255", "jpeg", "db", 0): lambda i: 0.30 + 0.35 * (i % 2)}


def _stage(art: Path, kind: str, key: str, spec: dict, *, files: dict | None = None) -> str:
    h = hashlib.sha256((kind + key).encode()).hexdigest()
    folder = art / f"{kind}-{h[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {"seconds_per_image": 0.1} if kind == "purify" else {}
    (folder / "DONE.json").write_text(json.dumps({"spec": {"kind": kind, **spec}, "hash": h, "outputs": outputs}))
    for name, obj in (files or {}).items():
        (folder / name).write_text(json.dumps(obj))
    return h


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    art = run / "artifacts"
    rng = np.random.default_rng(0)
    rows = []
    for ident in IDS:
        noise = rng.normal(0, 0.02)
        for (prot, pur, rec, qes), ism in CELLS.items():
            ism = ism(IDS.index(ident)) if callable(ism) else ism
            key = f"{ident}-{prot}-{pur}-{rec}-{qes}"
            up = f"files:{ident}"
            if prot != "none":
                linf = 7.0 if prot.startswith("weak") else 8.0
                up = _stage(art, "protect", key, {"params": {"method": prot.split("@")[0]}, "inputs": {"images": up}},
                            files={"protection.json": {"eps_nominal_255": "8/255",
                                                       "measured": {"linf_max_255": linf, "l2_mean_255": 500.0}}})
            if pur != "none":
                up = _stage(art, "purify", key, {"params": {"method": pur}, "inputs": {"images": up}})
            recipe = {"name": rec, "cdl": rec.endswith("cdl"), "lora": False, "steps": 8, "lr": 1e-4,
                      "num_class_images": 2, "purifications": None}
            train = _stage(art, "train", key, {"params": {"recipe": recipe}, "inputs": {"instances": up}})
            sample = _stage(art, "sample", key, {"params": {"n": 4}, "inputs": {"model": train}})
            labels = {"identity": ident, "protection": prot, "purification": pur, "recipe": rec, "qes": qes, "seed": 0}
            ev = _stage(art, "evaluate", key, {"params": {"metrics": ["ism", "fdfr"]}, "inputs": {"images": sample},
                                               "labels": labels})
            rows += [{"spec_hash": ev, "metric": "ism", "value": ism + noise, **labels, "details": {}, "provenance": {}},
                     {"spec_hash": ev, "metric": "fdfr", "value": 1 - ism - noise, **labels, "details": {},
                      "provenance": {}}]
    write_rows(run / "results.sqlite", rows)
    return run


def test_verdict_of_a_run_folder(tmp_path):
    """Gap signed by the metric's direction, recovered shares, states, strongest red team, measured budget; the
    figures are the ones written into the folder."""
    run = _run(tmp_path)
    v = vd.compute(run)
    assert v["headline"] == "ism" and v["metrics"] == {"ism": True, "fdfr": False}
    assert [x["victim"] for x in v["victims"]] == ["db"]  # the CDL recipe is a red team on the same fine-tune
    prots = {p["protection"]: p for p in v["victims"][0]["protections"]}
    advdm, weak, aspl = prots["advdm@8/255"], prots["weak@8/255"], prots["aspl@8/255"]
    assert advdm["gap"]["ism"]["mean"] == pytest.approx(0.40) and advdm["gap"]["ism"]["same_sign"] == 6
    assert advdm["gap"]["fdfr"]["mean"] == pytest.approx(0.40)  # lower is better: signed so that > 0 protects
    assert advdm["budget"] == {"linf_255": 8.0, "l2_255": 500.0, "nominal": "8/255"}
    assert weak["budget"]["linf_255"] == 7.0
    teams = {t["red_team"]: t for t in advdm["teams"]}
    assert set(teams) == {"JPEG", "CDL"}
    assert teams["JPEG"]["recovered"]["ism"]["mean"] == pytest.approx(0.9)
    assert teams["CDL"]["recovered"]["ism"]["mean"] == pytest.approx(0.1)
    assert teams["JPEG"]["state"] == "breaks" and teams["CDL"]["state"] == "holds"
    assert advdm["strongest"] == "JPEG" and advdm["residual"]["mean"] == pytest.approx(0.04)
    assert advdm["line"].startswith("holds against 1 of 2 red teams, broken by 1; strongest: JPEG recovers 90 % [")
    assert weak["effect"] is False and weak["line"].startswith("no measured effect")
    assert weak["gap"]["ism"]["same_sign"] == 0  # a mean of exactly 0 has no sign to agree with
    assert [t["state"] for t in weak["teams"]] == ["no gap"]  # nothing to break or hold
    wide = aspl["teams"][0]["recovered"]["ism"]
    assert aspl["teams"][0]["state"] == "unresolved" and not wide["resolved"] and wide["ci"][1] - wide["ci"][0] > 0.5
    assert aspl["line"] == "holds against 0 of 1 red teams, 1 unresolved; strongest: JPEG (its share is not measured at this size)"
    # a folder holding another grid: only the rows of the recipes asked for
    only = vd.compute(run, recipes_of=["db"])
    assert {t["red_team"] for t in only["victims"][0]["protections"][0]["teams"]} == {"JPEG"}


def test_verdict_written_to_json_and_sqlite(tmp_path):
    run = _run(tmp_path)
    v = vd.compute(run)
    path = vd.write(run, v)
    assert json.loads(path.read_text())["victims"][0]["protections"][0]["strongest"] == "JPEG"
    con = sqlite3.connect(run / "results.sqlite")
    got = con.execute("SELECT red_team, state FROM verdict WHERE kind = 'recovered' AND metric = 'ism' "
                      "AND protection = 'advdm@8/255' ORDER BY red_team").fetchall()
    assert got == [("CDL", "holds"), ("JPEG", "breaks")]
    vd.write(run, v)  # rewriting replaces, never duplicates
    assert con.execute("SELECT COUNT(*) FROM verdict WHERE kind = 'gap'").fetchone()[0] == 6
    assert len(con.execute("SELECT * FROM results").fetchall()) == 2 * len(IDS) * len(CELLS)  # results untouched


@pytest.mark.parametrize("width", [80, 120])
def test_verdict_view_never_breaks_an_interval(tmp_path, width):
    """#32 item 4: at 80 columns no line is wider than the terminal and no interval is split across lines;
    brackets print as written (rich markup would swallow ``[+0.36, +0.44]``)."""
    from rich.console import Console

    from cloakbench.bench.verdict_view import tables

    v = vd.compute(_run(tmp_path))
    console = Console(width=width, record=True, force_terminal=False)
    for t in tables(v, width=width):
        console.print(t)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "holds against 1 of 2 red teams, broken by 1\n" in text and "strongest: JPEG recovers 90 % [" in text
    assert re.search(r"\+0\.40 \[\+0\.\d\d, \+0\.\d\d\] 6/6", text)  # the gap, whole, on one line
    assert re.search(r"90% \[\d+, \d+\]", text) and "breaks" in text and "holds" in text
    assert "measured L-inf 8/255" in text and "ism" in text
    assert "not measured" in text and "too wide to tell 0% from 50%" in " ".join(text.split())


def test_demo_tables_print_the_bench_verdict(tmp_path):
    """The demo prints the verdict by the code every bench run uses (#32 item 1), a recovery whose interval cannot
    tell 0 % from 50 % as "not measured" with the command that measures it (#31 item 6), within 80 columns."""
    from rich.console import Console

    from cloakbench.minilab.demo import tables

    v = vd.compute(_run(tmp_path))
    summary = {"identities": v["identities"], "seeds": 1, "samples": 4, "verdict": v,
               "rows": [{"protection": "none", "red_team": "none", "ism": 0.7, "copy[px]": 0.0, "prior_refs[mini]": 0.1}]}
    console = Console(width=80, record=True, force_terminal=False)
    for t in tables(summary):
        console.print(t)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    assert "90% [90, 90]" in flat and "not measured" in flat and "cloakbench demo --full" in flat
    assert "mean[red - protected]" in flat  # brackets survive rich markup
    assert "copy" in flat and "prior_refs" not in flat


def test_report_leads_with_the_verdict(tmp_path):
    """#32 item 2: report.html opens with the verdict (measured budget, gap, each red team's state and share, a
    plot drawn from the verdict's numbers); the results table lists clean first, with the measured L-inf."""
    pytest.importorskip("matplotlib")
    from cloakbench.bench.report import build

    run = _run(tmp_path)
    html = build(run).read_text()
    assert html.index("Verdict: does each protection hold?") < html.index("<h2>Results</h2>")
    verdict = html[html.index('<table id="verdict">'):html.index("<h2>Results</h2>")]
    assert "holds against 1 of 2 red teams, broken by 1; strongest: JPEG recovers 90 % [90, 90]" in verdict
    assert '<td class="l breaks">breaks</td>' in verdict and "JPEG (strongest)" in verdict
    assert "+0.40 [+0.40, +0.40] 6/6" in verdict and "<td>8/255</td>" in verdict and "<td>500/255</td>" in verdict
    assert (run / "report_files" / "verdict.png").is_file() and 'src="report_files/verdict.png"' in html
    results = html[html.index('<table id="results">'):]
    first = results.split("</tr>")[1]
    assert '<td class="l">none</td>' in first  # clean first
    assert "<td>8/255</td>" in results.split("</tr>")[2]  # a protected cell carries its measured L-inf


def test_report_command_prints_and_stores_the_verdict(tmp_path):
    """`cloakbench report RUN` (and the end of `cloakbench bench`, the same function) prints the verdict within 80
    columns and writes verdict.json; a folder without results is refused by name."""
    from typer.testing import CliRunner

    from cloakbench.cli import app

    run = _run(tmp_path)
    res = CliRunner().invoke(app, ["report", str(run)], terminal_width=80)
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    assert "strongest: JPEG recovers 90 % [90, 90]" in res.output and "report.html" in res.output
    assert json.loads((run / "verdict.json").read_text())["headline"] == "ism"
    res = CliRunner().invoke(app, ["report", str(tmp_path / "empty")], terminal_width=80)
    assert res.exit_code == 2 and "run `cloakbench bench` first" in re.sub(r"[\s│]+", " ", res.output)


def test_one_identity_measures_nothing(tmp_path):
    """A bootstrap over one identity gives an interval of width 0: no state, no number, a line that says why."""
    run = _run(tmp_path)
    v = vd.compute(run, recipes_of=None)
    import sqlite3 as _sq

    con = _sq.connect(run / "results.sqlite")
    with con:
        con.execute("DELETE FROM results WHERE identity != 'subject0'")
    con.close()
    one = vd.compute(run)
    advdm = next(p for p in one["victims"][0]["protections"] if p["protection"] == "advdm@8/255")
    assert advdm["line"].startswith("not measured: 1 identity") and not advdm["effect"]
    assert {t["state"] for t in advdm["teams"]} == {"no gap"}
    assert all(not t["recovered"]["ism"]["resolved"] for t in advdm["teams"])
    assert v["victims"][0]["protections"][0]["gap"]["ism"]["n"] == 6
