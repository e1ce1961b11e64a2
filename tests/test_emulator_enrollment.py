"""The emulator's SPARK program: eligibility by the guide's test areas, and enrollment.

Every request and answer here goes through `ContractChecked`, so each answer is also checked
against the vendor's spec. Where the spec is silent, the emulator decides as follows:

- Eligibility (the guide, section 3): a user is eligible while one of its locations lies inside a
  test area (`onboard.areas`; a point exactly on the edge is outside). It follows the coordinates
  at every request, so a PUT, PATCH or DELETE of a location moves its user in or out at once.
  `GET /users/eligible` lists eligible users in the order they were registered, paged as
  `GET /users` is (pageSize 1..1000, 100 when absent or below 1).
- Meter point eligibility stays by the meter point id alone (18 digits, valid GS1 check digit):
  the spec ties it to no location, and the guide's areas make users eligible, not meter points.
- Enrollment, per user: GET answers 200 with `isEnrolled: false` and null id and date for a user
  never enrolled (or enrolled, then removed). POST enrolls an eligible user: 200 with a new
  `enrollmentId` (a UUID) and `enrollmentDate` (UTC, with its offset).
- Enrolling an ineligible user is refused: 400 saying why.
- Enrolling twice is refused: 400 "User '...' is already enrolled", the first enrollment unchanged.
  So a client tells "enrolled now" (200) from "enrolled already" (400 naming it, or a GET first);
  after a lost answer, the retry's 400 and a GET say the first POST went through.
- An enrolled user whose locations all leave the test areas stays enrolled (enrollment is the
  user's, eligibility its locations'), and its eligibility says false.
- DELETE answers 204; a user not enrolled gets 400 "User '...' is not enrolled".
- An unknown user gets 404 (no body, as the spec documents) from every one of these operations.
- Deleting a user deletes its enrollment: a user registered again under that ID starts unenrolled.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from conftest import API, Clock, token_for

from helpers import ContractChecked
from onboard import areas
from onboard.emulator import EmulatorSettings, create_app
from onboard.emulator.store import Location

pytestmark = pytest.mark.anyio

MPID = "707057500012345678"  # the guide's example: fails the GS1 check
GOOD_MPID = "707057500012345671"
OSLO = (59.9139, 10.7522)
AREA_1 = areas.area(1).centre
AREA_2 = areas.area(2).centre


@pytest.fixture
def checks() -> list[ContractChecked]:
    return []


@pytest.fixture
async def open_emulator(tmp_path, checks):
    """An emulator on a state file, and a signed-in client whose traffic is checked against the spec."""
    opened = []

    async def make(**knobs):
        knobs.setdefault("state", tmp_path / "emulator.sqlite")
        app = create_app(EmulatorSettings(**knobs), clock=Clock())
        checked = ContractChecked(httpx.ASGITransport(app=app))
        client = httpx.AsyncClient(transport=checked, base_url="http://emulator.local")
        client.headers["Authorization"] = f"Bearer {await token_for(client)}"
        opened.append((client, checked))
        checks.append(checked)
        return app, client

    yield make
    for client, checked in opened:
        await client.aclose()
        assert checked.problems == []


@pytest.fixture
async def spark(open_emulator):
    return await open_emulator()


@pytest.fixture
def api(spark):
    return spark[1]


def _path(user_id: str, *rest: str) -> str:
    return "/".join([f"{API}/users", quote(user_id, safe=""), *rest])


async def make_user(api, user_id: str, *places: tuple[float, float] | None) -> None:
    """A user with one location per place: coordinates, or None for one with a meter point id only."""
    assert (await api.post(f"{API}/users", json={"userId": user_id})).status_code == 201
    for i, place in enumerate(places):
        body: dict = {"locationId": f"{user_id}-l{i}", "meterPointIds": [MPID]}
        if place is not None:
            body["coordinates"] = {"latitude": place[0], "longitude": place[1]}
        answer = await api.post(_path(user_id, "locations"), json=body)
        assert answer.status_code == 201, answer.text


async def eligible(api, user_id: str) -> bool:
    answer = await api.get(_path(user_id, "eligibility"))
    assert answer.status_code == 200, answer.text
    assert answer.json().keys() == {"userId", "isEligible"} and answer.json()["userId"] == user_id
    return answer.json()["isEligible"]


async def eligible_users(api, **query) -> dict:
    answer = await api.get(f"{API}/users/eligible", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def move(api, user_id: str, location_id: str, place: tuple[float, float]) -> None:
    answer = await api.patch(_path(user_id, "locations", location_id),
                             json={"coordinates": {"latitude": place[0], "longitude": place[1]}})
    assert answer.status_code == 200, answer.text


# eligibility


@pytest.mark.parametrize("centre", [AREA_1, AREA_2], ids=["area 1", "area 2"])
async def test_a_location_in_a_test_area_makes_its_user_eligible(api, centre):
    await make_user(api, "in", centre)
    await make_user(api, "outside", OSLO)
    await make_user(api, "meter-only", None)
    await make_user(api, "no-locations")
    assert await eligible(api, "in")
    for user in ("outside", "meter-only", "no-locations"):
        assert not await eligible(api, user)


async def test_points_placed_by_onboard_areas_make_every_user_eligible(api):
    users = [f"c{i}" for i in range(6)]
    for user, place in zip(users, areas.place(1, users[:3]) + areas.place(2, users[3:]), strict=True):
        await make_user(api, user, OSLO, place)
    assert [await eligible(api, u) for u in users] == [True] * 6
    assert [u["userId"] for u in (await eligible_users(api))["users"]] == users


async def test_the_polygon_decides_not_its_bounding_box(api):
    """A point inside the area's bounding box but outside the polygon, and one on its edge."""
    area = areas.area(1)
    west, south, east, north = area.polygon.bounds
    corner = (south + 1e-6, west + 1e-6)
    vertex_lon, vertex_lat = area.polygon.exterior.coords[0]
    assert not area.contains(*corner)
    await make_user(api, "corner", corner)
    await make_user(api, "vertex", (vertex_lat, vertex_lon))
    assert not await eligible(api, "corner") and not await eligible(api, "vertex")
    assert (await eligible_users(api))["users"] == []


async def test_moving_locations_moves_their_user_in_and_out(api):
    await make_user(api, "u", AREA_1, OSLO)
    await move(api, "u", "u-l0", OSLO)
    assert not await eligible(api, "u")
    await move(api, "u", "u-l1", AREA_2)
    assert await eligible(api, "u")
    put = await api.put(_path("u", "locations", "u-l1"), json={"locationId": "u-l1", "meterPointIds": [MPID]})
    assert put.status_code == 200 and not await eligible(api, "u")
    await move(api, "u", "u-l0", AREA_1)
    assert await eligible(api, "u")
    assert (await api.delete(_path("u", "locations", "u-l0"))).status_code == 204
    assert not await eligible(api, "u")


async def test_one_location_left_inside_keeps_its_user_eligible(api):
    await make_user(api, "u", AREA_1, AREA_2)
    await move(api, "u", "u-l0", OSLO)
    assert await eligible(api, "u")


async def test_eligible_users_in_registration_order_once_each_paged(api):
    await make_user(api, "b-in", AREA_1)
    await make_user(api, "a-out", OSLO)
    await make_user(api, "d-twice", AREA_2, AREA_1)
    await make_user(api, "c-meter", None)
    await make_user(api, "e-in", AREA_2)
    everyone = await eligible_users(api)
    assert [u["userId"] for u in everyone["users"]] == ["b-in", "d-twice", "e-in"]
    assert everyone["pagination"] == {"totalRecords": 3, "pageSize": 100, "currentPage": 1, "totalPages": 1,
                                      "nextPage": None, "previousPage": None}
    second = await eligible_users(api, page=2, pageSize=2)
    assert second["users"] == [{"userId": "e-in"}]
    assert second["pagination"] == {"totalRecords": 3, "pageSize": 2, "currentPage": 2, "totalPages": 2,
                                    "nextPage": None, "previousPage": 1}
    assert (await eligible_users(api, pageSize=0))["pagination"]["pageSize"] == 100
    assert (await eligible_users(api, pageSize=5000))["pagination"]["pageSize"] == 1000
    past = await eligible_users(api, page=9)
    assert past["users"] == [] and past["pagination"]["totalRecords"] == 3


async def test_eligible_users_refuses_a_bad_page_as_the_spec_says(api, checks):
    answer = await api.get(f"{API}/users/eligible", params={"page": "first"})
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"] == {"body": ["page must be a whole number"]}
    assert checks[0].problems == [f"GET {API}/users/eligible: ParameterValidationError(name='page', location='query')"]
    checks[0].problems.clear()  # the request broke the spec on purpose; the answer kept it


async def test_eligible_users_scale_to_a_test_area_run(spark):
    """Twenty thousand placed locations: every user counted, in one spec-shaped page of 1000."""
    app, api = spark
    users = [f"bulk-{i}" for i in range(20_000)]
    app.store.add_users(users)
    app.store.add_locations([Location(f"{u}/home", u, "Residential", [], lat, lon)
                             for u, (lat, lon) in zip(users, areas.place(2, users), strict=True)])
    app.store.add_users(["outsider"])
    app.store.add_locations([Location("outsider/home", "outsider", "Residential", [], *OSLO)])
    last = await eligible_users(api, page=20, pageSize=1000)
    assert last["pagination"]["totalRecords"] == 20_000
    assert [u["userId"] for u in last["users"]] == users[19_000:]


async def test_meter_point_eligibility_does_not_follow_the_areas(api):
    await make_user(api, "u", AREA_1)
    assert await eligible(api, "u")
    for mpid, expected in ((MPID, False), (GOOD_MPID, True)):
        answer = await api.get(f"{API}/meters/{mpid}/eligible")
        assert answer.json() == {"meterPointId": mpid, "isEligible": expected}


# enrollment


async def enrollment(api, user_id: str) -> dict:
    answer = await api.get(_path(user_id, "enrollment"))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_enrollment_from_start_to_removal(api):
    await make_user(api, "u", AREA_1)
    assert await enrollment(api, "u") == {"userId": "u", "isEnrolled": False, "enrollmentId": None,
                                          "enrollmentDate": None}
    before = datetime.now(UTC).replace(microsecond=0)
    enrolled = await api.post(_path("u", "enrollment"))
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    assert body["userId"] == "u" and body["isEnrolled"] is True
    assert uuid.UUID(body["enrollmentId"])
    when = datetime.fromisoformat(body["enrollmentDate"])
    assert when.utcoffset() == timedelta(0) and before <= when <= datetime.now(UTC)
    assert await enrollment(api, "u") == body
    assert (await api.delete(_path("u", "enrollment"))).status_code == 204
    assert (await enrollment(api, "u"))["isEnrolled"] is False
    again = await api.post(_path("u", "enrollment"))
    assert again.status_code == 200 and again.json()["enrollmentId"] != body["enrollmentId"]


async def test_enrolling_twice_is_refused_naming_it_and_keeps_the_first(api):
    await make_user(api, "u", AREA_2)
    first = (await api.post(_path("u", "enrollment"))).json()
    twice = await api.post(_path("u", "enrollment"))
    assert twice.status_code == 400 and twice.json() == "User 'u' is already enrolled"
    assert await enrollment(api, "u") == first


async def test_an_ineligible_user_cannot_enroll_until_a_location_moves_in(api):
    await make_user(api, "u", OSLO)
    refused = await api.post(_path("u", "enrollment"))
    assert refused.status_code == 400
    assert refused.json() == "User 'u' is not eligible for the SPARK program: none of its locations lies in a test area"
    assert (await enrollment(api, "u"))["isEnrolled"] is False
    await move(api, "u", "u-l0", AREA_1)
    assert (await api.post(_path("u", "enrollment"))).status_code == 200


async def test_a_user_moved_out_stays_enrolled_but_is_not_eligible(api):
    await make_user(api, "u", AREA_1)
    assert (await api.post(_path("u", "enrollment"))).status_code == 200
    await move(api, "u", "u-l0", OSLO)
    assert not await eligible(api, "u")
    assert (await enrollment(api, "u"))["isEnrolled"] is True


async def test_removing_an_enrollment_that_is_not_there_is_refused_naming_it(api):
    await make_user(api, "u", AREA_1)
    answer = await api.delete(_path("u", "enrollment"))
    assert answer.status_code == 400 and answer.json() == "User 'u' is not enrolled"


@pytest.mark.parametrize("method, tail", [("GET", "eligibility"), ("GET", "enrollment"), ("POST", "enrollment"),
                                          ("DELETE", "enrollment")])
async def test_an_unknown_user_gets_404_without_a_body(api, method, tail):
    answer = await api.request(method, _path("ghost", tail))
    assert answer.status_code == 404 and answer.content == b""


async def test_ids_with_slashes_stay_one_user(api):
    await make_user(api, "a/b c", AREA_1)
    assert (await api.post(_path("a/b c", "enrollment"))).json()["userId"] == "a/b c"
    assert await eligible(api, "a/b c")


async def test_deleting_a_user_deletes_its_enrollment(spark):
    app, api = spark
    await make_user(api, "u", AREA_1)
    assert (await api.post(_path("u", "enrollment"))).status_code == 200
    assert (await api.delete(_path("u"))).status_code == 204
    assert app.store.enrollment("u") is None
    await make_user(api, "u", AREA_1)
    assert (await enrollment(api, "u"))["isEnrolled"] is False


async def test_enrollment_persists_in_the_state_file(open_emulator):
    _, api = await open_emulator()
    await make_user(api, "kept", AREA_2)
    first = (await api.post(_path("kept", "enrollment"))).json()
    _, again = await open_emulator()
    assert await enrollment(again, "kept") == first


async def test_a_state_file_from_before_enrollment_gains_it(open_emulator, tmp_path):
    """State files outlive upgrades: one written before enrollments existed must still open."""
    app, api = await open_emulator()
    await make_user(api, "old", AREA_1)
    app.store.close()
    with sqlite3.connect(tmp_path / "emulator.sqlite") as db:
        db.execute("DROP TABLE enrollments")
        db.execute("DROP INDEX locations_by_position")
    _, api = await open_emulator()
    assert (await api.post(_path("old", "enrollment"))).status_code == 200


async def test_a_lost_enrollment_answer_is_told_apart_by_the_retry_and_a_get(open_emulator):
    """The write happens, its answer is lost: the retry is refused naming it, and GET shows it."""
    app, api = await open_emulator(lost_rate=1)
    app.store.add_users(["u"])
    app.store.add_locations([Location("home", "u", "Residential", [], *AREA_1)])
    with pytest.raises(httpx.RemoteProtocolError):
        await api.post(_path("u", "enrollment"))
    retry = await api.post(_path("u", "enrollment"))
    assert retry.status_code == 400 and retry.json() == "User 'u' is already enrolled"
    assert (await enrollment(api, "u"))["isEnrolled"] is True
