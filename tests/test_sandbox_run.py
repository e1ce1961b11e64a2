"""The vendor's sandbox steps in `onboard run`: test areas (and, below, enrollment)."""

from __future__ import annotations

import sqlite3

from helpers import SAMPLES, local, read_csv, run
from onboard import areas

API = "/energy-coordination/v1"


def test_run_places_every_location_in_the_test_area_keeping_its_meter_point_ids(capsys, tmp_path):
    import anyio
    import httpx
    from conftest import token_for

    from onboard.emulator import EmulatorSettings, create_app

    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--test-area", "2", *local(state))
    assert code == 0, err
    with sqlite3.connect(state) as db:
        held = db.execute("SELECT location_id, latitude, longitude, meter_point_ids FROM locations").fetchall()
    assert len(held) == 69 and len({(lat, lon) for _, lat, lon, _ in held}) == 69
    assert all(areas.which_area(lat, lon) == 2 for _, lat, lon, _ in held)
    assert sum(1 for *_, mpids in held if mpids != "[]") == 46, "meter point ids are kept"
    rows = read_csv(tmp_path / "customers.results.csv")
    placed = [r for r in rows if r["location_id"]]
    assert all("placed in test area 2" in r["warnings"] for r in placed)
    first = placed[0]["warnings"]

    async def eligible() -> list[bool]:
        app = create_app(EmulatorSettings(state=state))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator.local") as api:
            api.headers["Authorization"] = f"Bearer {await token_for(api)}"
            answers = [await api.get(f"{API}/users/{u}/eligibility") for u in {r["user_id"] for r in placed}]
        return [a.json()["isEligible"] for a in answers]

    assert all(anyio.run(eligible)), "the guide's rule: a location in a test area makes its user eligible"
    code, out, _ = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--test-area", "2",
                       *local(state))
    assert code == 0 and "125 exists" in out, "the same sheet gives the same points"
    assert read_csv(tmp_path / "customers.results.csv")[0]["warnings"].split(";")[0] == first.split(";")[0]


def test_test_areas_are_refused_for_production(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "id")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "secret")
    for how in (["--env", "production", "--yes"],
                ["--base-url", "https://api.voluespark.com/energy-coordination/v1", "--yes"]):
        code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--test-area", "1", *how)
        assert code == 2 and "refused for production" in err and "nothing was sent" in err
    assert not (tmp_path / "customers.results.csv").exists()


def test_enroll_enrolls_every_registered_user_once(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--test-area", "2", "--enroll",
                         *local(state))
    assert code == 0, err
    assert "enrollments 60 created, 0 exists, 0 failed" in out
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM enrollments").fetchone()[0] == 60
    code, out, _ = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--test-area", "2", "--enroll",
                       *local(state))
    assert code == 0 and "enrollments 0 created, 60 exists, 0 failed" in out and "125 exists" in out


def test_enrolling_a_user_who_is_not_eligible_fails_its_rows_with_the_reason(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    assert run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))[0] == 0
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--enroll", *local(state))
    assert code == 1 and "enrollments 0 created, 0 exists, 60 failed" in out
    rows = read_csv(tmp_path / "customers.errors.csv")
    assert len(rows) == 125 and "the API did not enroll user" in rows[0]["error"] and "eligible" in rows[0]["error"]
    code, out, _ = run(capsys, "run", tmp_path / "customers.errors.csv", "--test-area", "2", "--enroll",
                       *local(state))
    assert "enrollments 0 created, 0 exists, 60 failed" in out, "registered sites are not moved by a run"
    assert run(capsys, "move", tmp_path / "customers.results.csv", "--test-area", "2", *local(state))[0] == 0
    code, out, _ = run(capsys, "run", tmp_path / "customers.errors.csv", "--enroll", *local(state))
    assert code == 0 and "enrollments 60 created" in out, out
