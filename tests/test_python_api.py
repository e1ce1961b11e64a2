"""`import onboard`: DataFrames (and dicts) in, DataFrames out, against the emulator; the same
refusals, messages and outputs as the command line."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pandas as pd
import pytest

import onboard
from helpers import MPIDS, read_csv, state_counts
from onboard.errors import AuthError, ConfigError, InputError, OnboardError

OWN = ["row", "status", "user_id", "location_id", "resource_id", "error", "warnings"]


def customers() -> pd.DataFrame:
    """As a notebook user builds one: from a dict, ids typed as the numbers they look like."""
    return pd.DataFrame({
        "Kundenummer": [4711, 4711, 4712],
        "Navn": ["Kari", "Kari", "Ola"],
        "Anlegg": ["hjem", "hjem", "hytte"],
        "Målepunkt-ID": [int(MPIDS[0]), int(MPIDS[0]), int(MPIDS[1])],
        "Enhetstype": ["Varmepumpe", "Elbillader", "Varmtvannsbereder"],
        "Serienummer": ["HP-1", "CH-1", "WH-1"],
    })


def test_validate_a_dataframe_gives_results_and_errors_as_dataframes():
    frame = customers()
    frame.loc[3] = [4713, "Per", "hjem", 12, "Gadget", "X-1"]
    result = onboard.validate(frame)
    assert isinstance(result.results, pd.DataFrame) and isinstance(result.errors, pd.DataFrame)
    assert list(result.results.columns) == [*frame.columns, *OWN]
    assert list(result.results["status"]) == ["valid", "valid", "valid", "invalid"]
    assert list(result.results["row"]) == [2, 3, 4, 5], "rows are numbered as the frame would be in a workbook"
    assert list(result.results["Kundenummer"]) == [4711, 4711, 4712, 4713], "the input's own values stay"
    assert len(result.errors) == 1 and "Målepunkt-ID" in result.errors["error"].iloc[0]
    assert not result.ok and result.summary["status"] == {"valid": 3, "failed": 0, "invalid": 1}


def test_run_a_dataframe_on_the_local_emulator(tmp_path):
    state = tmp_path / "e.sqlite"
    result = onboard.run(customers(), env="local", state=state)
    assert result.ok and set(result.results["status"]) == {"created"}
    assert state_counts(state) == {"users": 2, "locations": 2, "resources": 3}
    again = onboard.run(customers(), env="local", state=state)
    assert set(again.results["status"]) == {"exists"} and again.summary["entities"]["users"]["created"] == 0
    assert list(again.results["user_id"]) == list(result.results["user_id"])


def test_ids_read_as_floats_are_refused_as_excel_damage_is(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(f"customer_id,meter_point_ids,resource_type\n4711,{MPIDS[0]},HVAC\n4712,,HVAC\n"
                    f"4713,{MPIDS[1]},HVAC\n", encoding="utf-8")
    frame = pd.read_csv(path)  # default dtypes: a column with a gap is float64
    assert frame["meter_point_ids"].dtype == "float64" and frame["customer_id"].dtype == "int64"
    result = onboard.validate(frame)
    assert "Excel dropped digits" in result.results["error"].iloc[0]
    path.write_text(f"customer_id,meter_point_ids,resource_type\n4711,{MPIDS[0]},HVAC\n", encoding="utf-8")
    exact = pd.read_csv(path)
    assert exact["meter_point_ids"].dtype == "int64" and onboard.validate(exact).ok, "an int64 id is exact"


def test_a_dataframe_from_sql_with_nulls_and_a_mapping(tmp_path):
    db = sqlite3.connect(tmp_path / "crm.sqlite")
    db.execute("CREATE TABLE kunder (kundenr INTEGER, maalepunkt TEXT, utstyr TEXT, serie TEXT, notat TEXT)")
    db.executemany("INSERT INTO kunder VALUES (?, ?, ?, ?, ?)", [
        (1, MPIDS[0], "Pumpe X", "P-1", None), (2, MPIDS[1], "Pumpe X", "P-2", "ring først")])
    db.commit()
    frame = pd.read_sql("SELECT * FROM kunder", db)
    mapping = {"columns": {"kundenr": "customer_id", "maalepunkt": "meter_point_ids", "utstyr": "resource_type",
                           "serie": "resource_ref"}, "values": {"resource_type": {"Pumpe X": "HVAC"}}}
    result = onboard.run(frame, env="local", state=tmp_path / "e.sqlite", mapping=mapping)
    assert result.ok, result.errors
    assert pd.isna(result.results["notat"].iloc[0]) and result.results["notat"].iloc[1] == "ring først"


def test_rows_as_dicts_and_a_path_alike(tmp_path):
    rows = [{"customer_id": "1", "meter_point_ids": MPIDS[0]}, {"customer_id": "2", "meter_point_ids": MPIDS[1],
                                                                 "note": "x"}]
    result = onboard.validate(rows)
    assert list(result.results.columns) == ["customer_id", "meter_point_ids", "note", *OWN] and result.ok
    path = tmp_path / "c.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert onboard.validate(path).ok and onboard.validate(str(path)).ok


def test_write_gives_the_usual_outputs(tmp_path):
    frame = customers()
    frame.loc[3] = [4713, "Per", "hjem", 12, "HVAC", "X-1"]
    result = onboard.run(frame, env="local", state=tmp_path / "e.sqlite")
    outputs = result.write(tmp_path / "out", stem="crm", format="csv")
    assert outputs.results.name == "crm.results.csv" and outputs.errors.exists()
    assert [r["status"] for r in read_csv(outputs.results)] == ["created"] * 3 + ["invalid"]
    assert json.loads(outputs.summary.read_text())["rows"] == 4
    xlsx = result.write(tmp_path / "out", stem="crm")
    assert xlsx.results.suffix == ".xlsx"


def test_out_writes_outputs_and_journal_and_resumes_like_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_EMULATOR_FAIL_RATE", "1")
    monkeypatch.setenv("ONBOARD_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("ONBOARD_RETRY_BASE", "0.01")
    state = tmp_path / "e.sqlite"
    stopped = onboard.run(customers(), env="local", state=state, out=tmp_path / "out", name="crm")
    assert stopped.stopped is not None and not stopped.ok and set(stopped.results["status"]) == {"not sent"}
    assert (tmp_path / "out" / "crm.journal.sqlite").exists()
    monkeypatch.delenv("ONBOARD_EMULATOR_FAIL_RATE")
    resumed = onboard.run(customers(), env="local", state=state, out=tmp_path / "out", name="crm")
    assert resumed.ok and resumed.summary["resumed"] and set(resumed.results["status"]) == {"created"}


def test_credentials_come_from_arguments_and_a_wrong_secret_raises_before_sending(tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_EMULATOR_CLIENT_ID", "partner")
    monkeypatch.setenv("ONBOARD_EMULATOR_CLIENT_SECRET", "right")
    state = tmp_path / "e.sqlite"
    with pytest.raises(AuthError) as refused:
        onboard.run(customers(), env="local", state=state, client_id="partner", client_secret="wrong-secret")
    assert "SPARK_CLIENT_SECRET" in str(refused.value) and "wrong-secret" not in str(refused.value)
    assert state_counts(state)["users"] == 0
    assert onboard.run(customers(), env="local", state=state, client_id="partner", client_secret="right").ok
    with pytest.raises(ConfigError, match="SPARK_CLIENT_ID and SPARK_CLIENT_SECRET are not set"):
        onboard.run(customers(), env="sandbox")


def test_errors_are_typed_with_the_command_lines_messages(tmp_path, capsys):
    from onboard import cli

    with pytest.raises(InputError) as raised:
        onboard.validate(pd.DataFrame({"Navn": ["Kari"]}))
    assert isinstance(raised.value, OnboardError) and "no customer_id column" in str(raised.value)
    pd.DataFrame({"Navn": ["Kari"]}).to_csv(tmp_path / "n.csv", index=False)
    assert cli.main(["validate", str(tmp_path / "n.csv")]) == 2
    assert str(raised.value).split(". Expected")[0].replace("dataframe", "n.csv") in capsys.readouterr().err
    with pytest.raises(InputError, match="iterable of dicts"):
        onboard.validate(42)


def test_no_secret_in_a_result_or_its_repr(tmp_path):
    result = onboard.run(customers(), env="local", state=tmp_path / "e.sqlite", client_id="me",
                         client_secret="hunter2-secret")
    shown = repr(result) + json.dumps(result.summary) + result.results.to_csv()
    assert "hunter2" not in shown and "rows" in repr(result)


def test_run_inside_a_running_loop_and_run_async(tmp_path):
    async def notebook_cell():
        inside = onboard.run(customers(), env="local", state=tmp_path / "a.sqlite")
        awaited = await onboard.run_async(customers(), env="local", state=tmp_path / "b.sqlite")
        return inside, awaited

    inside, awaited = asyncio.run(notebook_cell())
    assert inside.ok and awaited.ok
    assert list(inside.results["user_id"]) == list(awaited.results["user_id"])


def test_the_example_notebook_runs_in_a_real_kernel(tmp_path):
    """docs/example.ipynb, executed by a Jupyter kernel (a loop is already running there), its
    outputs checked: the results table, the refused row and its reason."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "docs" / "example.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    shown = ["".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in cell.get("outputs", []))
             for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert "<onboard.Result 4 rows: 3 created, 0 failed, 1 invalid (not ok)>" in shown[1]
    assert "created" in shown[2] and "invalid" in shown[2]
    assert "meter point id 12 has 2 digits" in shown[3]
    assert "'users': {'created': 2" in shown[4] and "'resources': {'created': 3" in shown[4]
    assert state_counts(tmp_path / "example-emulator.sqlite") == {"users": 2, "locations": 2, "resources": 3}
