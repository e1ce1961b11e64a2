"""The emulator behaves as the spec and the vendor's guide say the service does."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from conftest import API, token_for

from onboard.emulator.app import IMPLEMENTED

pytestmark = pytest.mark.anyio

MPID = "707057500012345678"  # the vendor guide's own example: fails the GS1 check
GOOD_MPID = "707057500012345671"  # same digits with a valid GS1 check digit


async def make_user(api, user_id="u1"):
    assert (await api.post(f"{API}/users", json={"userId": user_id})).status_code == 201


async def make_location(api, user_id="u1", location_id="l1", **fields):
    body = {"locationId": location_id, "meterPointIds": [MPID], **fields}
    answer = (await api.post(f"{API}/users/{quote(user_id, safe='')}/locations", json=body))
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_every_operation_of_the_issue_is_served():
    assert set(IMPLEMENTED) == {
        "PostUser", "PostUsers", "GetUsers", "GetUserById", "DeleteUserById", "GetLocationsByUserId",
        "PostLocation", "PostLocations", "GetLocationByLocationId", "UpdateLocation", "PatchLocation",
        "DeleteLocation", "GetLocationBoundResources", "PostLocationBoundResource", "PostVehicle",
        "GetResourcesForUser", "GetResourceById", "DeleteResourceById", "GetMpidEligibility",
        "GetUserEligibilityByUserId", "GetEligibleUsers", "GetUserEnrollmentByUserId", "PostUserEnrollment",
        "DeleteUserEnrollment",
    }


# tokens


async def test_token_endpoint_accepts_any_non_empty_pair_by_default(emulator):
    _, api = emulator
    assert await token_for(api, "any", "thing")
    answer = (await api.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "x",
                                              "client_secret": ""}))
    assert answer.status_code == 400 and answer.json() == {"error": "invalid_client"}


async def test_token_endpoint_with_configured_client_accepts_only_that_pair(make_emulator):
    app, api = await make_emulator(client_id="partner", client_secret="s3cret")
    wrong = (await api.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "partner",
                                             "client_secret": "guess"}))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"
    answer = (await api.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "partner",
                                              "client_secret": "s3cret"})).json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600 and answer["access_token"]


async def test_token_endpoint_refuses_other_grants(api):
    answer = (await api.post("/connect/token", data={"grant_type": "password", "client_id": "a", "client_secret": "b"}))
    assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"


async def test_api_needs_a_valid_bearer_token(api):
    assert (await api.get(f"{API}/users", headers={"Authorization": ""})).status_code == 401
    assert (await api.get(f"{API}/users", headers={"Authorization": "Bearer forged"})).status_code == 401
    assert (await api.get(f"{API}/users")).status_code == 200


async def test_expired_token_gets_401(make_emulator):
    from conftest import Clock

    clock = Clock()
    _, api = await make_emulator(clock=clock, token_ttl=60)
    assert (await api.get(f"{API}/users")).status_code == 200
    clock.now += 59
    assert (await api.get(f"{API}/users")).status_code == 200
    clock.now += 1
    assert (await api.get(f"{API}/users")).status_code == 401


# users


async def test_user_create_get_and_existing_id_refused_with_its_name(api):
    await make_user(api, "u1")
    assert (await api.get(f"{API}/users/u1")).json() == {"userId": "u1"}
    again = (await api.post(f"{API}/users", json={"userId": "u1"}))
    assert again.status_code == 400 and "u1" in again.json() and "exists" in again.json()
    assert (await api.get(f"{API}/users/nobody")).status_code == 404
    assert (await api.get(f"{API}/users/nobody")).content == b""


async def test_user_batch_is_all_or_nothing_and_names_the_bad_item(emulator):
    app, api = emulator
    await make_user(api, "old")
    batch = {"users": [{"userId": "a"}, {"userId": "old"}, {"userId": "b"}]}
    refused = await api.post(f"{API}/users/batch", json=batch)
    assert refused.status_code == 400
    assert "users[1]" in refused.json() and "old" in refused.json()
    assert app.store.counts()["users"] == 1
    twice = (await api.post(f"{API}/users/batch", json={"users": [{"userId": "a"}, {"userId": "a"}]}))
    assert twice.status_code == 400 and "twice" in twice.json()
    created = (await api.post(f"{API}/users/batch", json={"users": [{"userId": "a"}, {"userId": "b"}]}))
    assert created.status_code == 201 and created.json() == {"users": [{"userId": "a"}, {"userId": "b"}]}


async def test_users_are_paged_with_page_size_at_most_1000(api):
    (await api.post(f"{API}/users/batch", json={"users": [{"userId": f"u{i}"} for i in range(1005)]}))
    first = (await api.get(f"{API}/users", params={"pageSize": 2000})).json()
    assert first["pagination"]["pageSize"] == 1000 and len(first["users"]) == 1000
    assert first["pagination"]["totalRecords"] == 1005 and first["pagination"]["nextPage"] == 2
    second = (await api.get(f"{API}/users", params={"pageSize": 1000, "page": 2})).json()
    assert [u["userId"] for u in second["users"]] == [f"u{i}" for i in range(1000, 1005)]
    assert second["pagination"]["nextPage"] is None and second["pagination"]["previousPage"] == 1


async def test_unknown_query_parameter_is_refused(api):
    answer = (await api.get(f"{API}/users", params={"size": 5}))
    assert answer.status_code == 400 and "size" in answer.json()


# request validation against the spec's own schemas


@pytest.mark.parametrize("body, words", [
    ({"userId": "u1", "name": "Kari"}, "Additional properties"),
    ({}, "required"),
    ({"userId": 7}, "not of type 'string'"),
])
async def test_request_bodies_are_validated_against_the_spec(api, body, words):
    answer = (await api.post(f"{API}/users", json=body))
    assert answer.status_code == 400 and words in answer.json()


async def test_wrong_enum_and_null_coordinates_are_refused(api):
    await make_user(api)
    wrong = (await api.post(f"{API}/users/u1/locations", json={"locationId": "l", "locationType": "Villa",
                                                       "meterPointIds": [MPID]}))
    assert wrong.status_code == 400 and "Villa" in wrong.json()
    null = (await api.post(f"{API}/users/u1/locations", json={"locationId": "l", "coordinates": None,
                                                      "meterPointIds": [MPID]}))
    assert null.status_code == 400 and "coordinates" in null.json()


async def test_broken_json_is_a_400_string(api):
    answer = (await api.post(f"{API}/users", content=b"{", headers={"content-type": "application/json"}))
    assert answer.status_code == 400 and "JSON" in answer.json()


# locations


async def test_location_needs_meter_point_ids_or_coordinates(api):
    await make_user(api)
    neither = (await api.post(f"{API}/users/u1/locations", json={"locationId": "l", "meterPointIds": []}))
    assert neither.status_code == 400 and "meterPointIds or coordinates" in neither.json()
    by_coordinates = await make_location(api, location_id="l2", meterPointIds=[],
                                   coordinates={"latitude": 59.91, "longitude": 10.75})
    assert by_coordinates["coordinates"] == {"latitude": 59.91, "longitude": 10.75}


@pytest.mark.parametrize("coordinates", [
    {"latitude": 91, "longitude": 10},
    {"latitude": -90.5, "longitude": 10},
    {"latitude": 59, "longitude": 180.01},
    {"latitude": 59},
])
async def test_coordinates_must_be_in_range_and_complete(api, coordinates):
    await make_user(api)
    answer = (await api.post(f"{API}/users/u1/locations", json={"locationId": "l", "coordinates": coordinates}))
    assert answer.status_code == 400 and "coordinates" in answer.json()


async def test_location_answer_leaves_out_missing_coordinates_and_defaults_type(api):
    await make_user(api)
    location = await make_location(api)
    assert "coordinates" not in location
    assert location == {"locationId": "l1", "locationType": "Unknown", "meterPointId": MPID,
                        "meterPointIds": [MPID], "userId": "u1"}


async def test_location_of_missing_user_is_404_and_existing_id_is_409(api):
    assert (await api.post(f"{API}/users/ghost/locations", json={"locationId": "l1", "meterPointIds": [MPID]}
                    )).status_code == 404
    await make_user(api)
    await make_location(api)
    await make_user(api, "u2")
    again = (await api.post(f"{API}/users/u2/locations", json={"locationId": "l1", "meterPointIds": [MPID]}))
    assert again.status_code == 409 and again.content == b""


async def test_location_batch_is_all_or_nothing_and_names_the_bad_item(emulator):
    app, api = emulator
    await make_user(api)
    batch = {"locations": [
        {"userId": "u1", "locationId": "a", "meterPointIds": [MPID]},
        {"userId": "ghost", "locationId": "b", "meterPointIds": [MPID]},
    ]}
    refused = (await api.post(f"{API}/users/locations/batch", json=batch))
    assert refused.status_code == 400 and "locations[1]" in refused.json() and "ghost" in refused.json()
    assert app.store.counts()["locations"] == 0
    await make_location(api, location_id="taken")
    batch["locations"][1] = {"userId": "u1", "locationId": "taken", "meterPointIds": [MPID]}
    refused = (await api.post(f"{API}/users/locations/batch", json=batch))
    assert refused.status_code == 400 and "taken" in refused.json() and "exists" in refused.json()
    assert app.store.counts()["locations"] == 1
    batch["locations"][1]["locationId"] = "b"
    assert (await api.post(f"{API}/users/locations/batch", json=batch)).status_code == 201
    assert [loc["locationId"] for loc in (await api.get(f"{API}/users/u1/locations")).json()] == ["taken", "a", "b"]


async def test_location_belongs_to_its_user(api):
    await make_user(api)
    await make_user(api, "u2")
    await make_location(api)
    assert (await api.get(f"{API}/users/u1/locations/l1")).status_code == 200
    assert (await api.get(f"{API}/users/u2/locations/l1")).status_code == 404


async def test_put_and_patch_location(api):
    await make_user(api)
    await make_location(api)
    put = (await api.put(f"{API}/users/u1/locations/l1", json={"locationId": "l1", "locationType": "Commercial",
                                                       "meterPointIds": [GOOD_MPID]}))
    assert put.status_code == 200 and put.json()["meterPointIds"] == [GOOD_MPID]
    moved = {"coordinates": {"latitude": 78.2, "longitude": 15.6}}
    patch = await api.patch(f"{API}/users/u1/locations/l1", json=moved)
    assert patch.status_code == 200
    assert patch.json()["coordinates"] == {"latitude": 78.2, "longitude": 15.6}
    assert patch.json()["meterPointIds"] == [GOOD_MPID] and patch.json()["locationType"] == "Commercial"
    mismatch = (await api.put(f"{API}/users/u1/locations/l1", json={"locationId": "other", "meterPointIds": [MPID]}))
    assert mismatch.status_code == 400


# resources


async def test_location_bound_resource_needs_an_owned_location(api):
    await make_user(api)
    await make_user(api, "u2")
    await make_location(api)
    body = {"resourceId": "r1", "resourceType": "HotWaterTank"}
    missing = (await api.post(f"{API}/users/u2/locations/l1/resources", json=body))
    assert missing.status_code == 404 and "l1" in missing.json()
    created = (await api.post(f"{API}/users/u1/locations/l1/resources", json={**body, "meterPointId": MPID}))
    assert created.status_code == 201
    assert created.json() == {"resourceId": "r1", "resourceType": "HotWaterTank", "userId": "u1",
                              "locationId": "l1", "meterPointId": MPID}
    again = (await api.post(f"{API}/users/u1/locations/l1/resources", json=body))
    assert again.status_code == 400 and "r1" in again.json() and "exists" in again.json()


async def test_vehicle_only_on_vehicles_endpoint_with_problem_details(api):
    await make_user(api)
    await make_location(api)
    at_location = (await api.post(f"{API}/users/u1/locations/l1/resources",
                           json={"resourceId": "car", "resourceType": "Vehicle"}))
    assert at_location.status_code == 400 and "vehicles" in at_location.json()
    charger = (await api.post(f"{API}/users/u1/vehicles", json={"resourceId": "c", "resourceType": "Charger"}))
    assert charger.status_code == 400
    assert charger.headers["content-type"] == "application/problem+json"
    assert charger.json()["errors"]["resourceType"]
    car = (await api.post(f"{API}/users/u1/vehicles", json={"resourceId": "car", "resourceType": "Vehicle"}))
    assert car.status_code == 201 and car.json()["locationId"] is None
    again = (await api.post(f"{API}/users/u1/vehicles", json={"resourceId": "car", "resourceType": "Vehicle"}))
    assert again.status_code == 400 and "car" in again.json()["detail"]
    ghost = (await api.post(f"{API}/users/ghost/vehicles", json={"resourceId": "v2", "resourceType": "Vehicle"}))
    assert ghost.status_code == 400 and ghost.headers["content-type"] == "application/problem+json"


async def test_resource_lookups(api):
    await make_user(api)
    await make_location(api)
    (await api.post(f"{API}/users/u1/locations/l1/resources", json={"resourceId": "r1", "resourceType": "Charger"}))
    (await api.post(f"{API}/users/u1/vehicles", json={"resourceId": "v1", "resourceType": "Vehicle"}))
    assert [r["resourceId"] for r in (await api.get(f"{API}/users/u1/resources")).json()["resources"]] == ["r1", "v1"]
    assert [r["resourceId"] for r in (await api.get(f"{API}/users/u1/locations/l1/resources")).json()] == ["r1"]
    assert (await api.get(f"{API}/resources/r1")).json()["resourceType"] == "Charger"
    missing = (await api.get(f"{API}/resources/nope"))
    assert missing.status_code == 404 and "nope" in missing.json()
    assert (await api.get(f"{API}/users/ghost/resources")).status_code == 404


async def test_deletes_cascade(emulator):
    app, api = emulator
    await make_user(api)
    await make_location(api)
    await make_location(api, location_id="l2")
    (await api.post(f"{API}/users/u1/locations/l1/resources", json={"resourceId": "r1", "resourceType": "Charger"}))
    (await api.post(f"{API}/users/u1/locations/l2/resources", json={"resourceId": "r2", "resourceType": "HVAC"}))
    (await api.post(f"{API}/users/u1/vehicles", json={"resourceId": "v1", "resourceType": "Vehicle"}))
    assert (await api.delete(f"{API}/users/u1/locations/l1")).status_code == 204
    assert (await api.get(f"{API}/resources/r1")).status_code == 404
    assert app.store.counts() == {"users": 1, "locations": 1, "resources": 2}
    assert (await api.delete(f"{API}/resources/v1")).status_code == 204
    assert (await api.delete(f"{API}/resources/v1")).status_code == 404
    assert (await api.delete(f"{API}/users/u1")).status_code == 204
    assert app.store.counts() == {"users": 0, "locations": 0, "resources": 0}
    assert (await api.delete(f"{API}/users/u1")).status_code == 404


async def test_ids_with_slashes_and_spaces_stay_one_path_segment(api):
    await make_user(api, "a/b c")
    await make_location(api, "a/b c", "site/1")
    assert (await api.get(f"{API}/users/a%2Fb%20c/locations/site%2F1")).json()["userId"] == "a/b c"


@pytest.mark.parametrize("mpid, eligible", [(GOOD_MPID, True), (MPID, False), (GOOD_MPID[:-1], False),
                                            ("70705750001234567x", False)])
async def test_meter_eligibility_follows_the_gs1_check_digit(api, mpid, eligible):
    assert (await api.get(f"{API}/meters/{mpid}/eligible")).json() == {"meterPointId": mpid, "isEligible": eligible}


async def test_unknown_paths_and_methods(api):
    assert (await api.get(f"{API}/nowhere")).status_code == 404
    answer = (await api.put(f"{API}/users/batch"))
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


async def test_state_persists_in_its_sqlite_file(make_emulator, tmp_path):
    _, api = await make_emulator(state=tmp_path / "kept.sqlite")
    await make_user(api, "kept")
    _, again = await make_emulator(state=tmp_path / "kept.sqlite")
    assert (await again.get(f"{API}/users/kept")).status_code == 200
