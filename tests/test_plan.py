"""Rows become users, locations and resources with stable IDs; rows that contradict each other are refused."""

from __future__ import annotations

import uuid

from helpers import HEADERS, MPIDS, write_csv
from onboard import plan as planning
from onboard import records
from onboard import sheet as sheets
from onboard.plan import NAMESPACE, derived_id


def plan_of(tmp_path, rows, headers=HEADERS):
    sheet = sheets.read(write_csv(tmp_path / "in.csv", rows, headers))
    return planning.build(records.check(sheet))


def problems(plan, number):
    return [p.message for p in next(r for r in plan.rows if r.number == number).problems]


def test_ids_are_uuid5_of_the_partners_keys_and_never_change():
    assert uuid.UUID("5b0c3c3e-6f0e-5a43-9d35-0b6a1f1e7a10") == NAMESPACE
    assert derived_id("user", "4711") == "8cbc6b11-dfe0-5b4b-8dd8-321590baca76"
    assert derived_id("user", "4711") == str(uuid.uuid5(NAMESPACE, "user\x1f4711"))


def test_same_customer_is_one_user_and_same_site_one_location(tmp_path):
    plan = plan_of(tmp_path, [
        ["4711", "home", "Residential", MPIDS[0], "", "", "WH-1", "HotWaterTank"],
        ["4711", "home", "", "", "", "", "CH-1", "Charger"],
        ["4711", "cabin", "", "", "61.1", "9.1", "", ""],
        ["4712", "home", "", MPIDS[1], "", "", "", ""],
    ])
    assert len(plan.users) == 2 and len(plan.locations) == 3 and len(plan.resources) == 2
    home = plan.locations[plan.rows[0].location_id]
    assert home.meter_point_ids == (MPIDS[0],) and home.location_type == "Residential"
    assert plan.rows[0].location_id == plan.rows[1].location_id != plan.rows[2].location_id
    assert plan.rows[0].user_id == derived_id("user", "4711")


def test_site_rows_that_disagree_are_all_refused_naming_the_other_rows(tmp_path):
    plan = plan_of(tmp_path, [
        ["4711", "home", "", MPIDS[0], "", "", "WH-1", "HotWaterTank"],
        ["4711", "home", "", MPIDS[1], "", "", "CH-1", "Charger"],
        ["4711", "home", "", "", "", "", "HV-1", "HVAC"],
        ["4712", "home", "", MPIDS[1], "", "", "", ""],
    ])
    assert problems(plan, 2) == ["site 'home' of customer '4711' has a different meter_point_ids in row 3"]
    assert problems(plan, 3) == ["site 'home' of customer '4711' has a different meter_point_ids in row 2"]
    assert problems(plan, 4) == ["site 'home' of customer '4711' has a different meter_point_ids in rows 2, 3"]
    assert plan.rows[3].valid and len(plan.locations) == 1 and not plan.resources


def test_same_resource_ref_twice_is_one_device_or_both_rows_are_refused(tmp_path):
    same = plan_of(tmp_path, [
        ["4711", "home", "", MPIDS[0], "", "", "SN-1", "Charger"],
        ["4711", "home", "", MPIDS[0], "", "", "SN-1", "charger"],
    ])
    assert len(same.resources) == 1 and same.rows[0].resource_id == same.rows[1].resource_id
    other = plan_of(tmp_path, [
        ["4711", "home", "", MPIDS[0], "", "", "SN-1", "Charger"],
        ["4711", "home", "", MPIDS[0], "", "", "SN-1", "HVAC"],
        ["4712", "home", "", MPIDS[1], "", "", "SN-1", "HVAC"],
    ])
    assert problems(other, 2) == ["device 'SN-1' of customer '4711' has a different resource_type in row 3"]
    assert not other.rows[1].valid and other.rows[2].valid


def test_vehicle_belongs_to_the_user_and_its_site_is_still_registered(tmp_path):
    plan = plan_of(tmp_path, [["4711", "home", "", MPIDS[0], "", "", "VIN-1", "EV"]])
    (vehicle,) = plan.resources.values()
    assert vehicle.is_vehicle and vehicle.location_id is None
    assert len(plan.locations) == 1 and plan.rows[0].location_id in plan.locations


def test_explicit_ids_are_used(tmp_path):
    plan = plan_of(tmp_path, [["4711", "u-1", "home", "loc/1", MPIDS[0], "r-1", "Charger"]],
                   ["customer_id", "user_id", "location_ref", "location_id", "meter_point_ids", "resource_id",
                    "resource_type"])
    assert (plan.rows[0].user_id, plan.rows[0].location_id, plan.rows[0].resource_id) == ("u-1", "loc/1", "r-1")


def test_an_explicit_id_cannot_name_two_entities(tmp_path):
    plan = plan_of(tmp_path, [["1", "same"], ["2", "same"]], ["customer_id", "user_id"])
    assert "names different entities in rows 2, 3" in problems(plan, 2)[0]


def test_unnamed_devices_get_ids_by_position_and_refused_rows_keep_theirs(tmp_path):
    rows = [
        ["4711", "home", "", MPIDS[0], "", "", "", "Charger"],
        ["4711", "home", "", MPIDS[0], "", "", "", "Charger"],
        ["4711", "home", "", MPIDS[0], "95", "", "", "Charger"],
    ]
    plan = plan_of(tmp_path, rows)
    ids = [r.resource_id for r in plan.rows]
    assert len(set(ids)) == 3 and len(plan.resources) == 2
    assert not plan.rows[2].valid and ids[2] is not None
    again = plan_of(tmp_path, rows)
    assert [r.resource_id for r in again.rows] == ids


def test_site_without_ref_is_known_by_its_meter_point_ids(tmp_path):
    plan = plan_of(tmp_path, [
        ["4711", "", "", MPIDS[0], "", "", "WH-1", "HotWaterTank"],
        ["4711", "", "", MPIDS[0], "", "", "CH-1", "Charger"],
        ["4711", "", "", MPIDS[1], "", "", "", ""],
    ])
    assert len(plan.locations) == 2 and plan.rows[0].location_id == plan.rows[1].location_id


def test_site_with_neither_meter_ids_nor_coordinates_is_refused(tmp_path):
    plan = plan_of(tmp_path, [["4711", "home", "", "", "", "", "CH-1", "Charger"]])
    assert "neither meter point ids nor latitude/longitude" in problems(plan, 2)[0]


def test_derived_ids_are_uuid5_of_the_keys_forever():
    import uuid

    from hypothesis import given
    from hypothesis import strategies as st

    from onboard.plan import NAMESPACE, derived_id

    @given(st.sampled_from(["user", "location", "resource"]), st.lists(st.text(), min_size=1, max_size=4))
    def same(kind, keys):
        assert derived_id(kind, *keys) == str(uuid.uuid5(NAMESPACE, "\x1f".join((kind, *keys))))

    same()
    assert derived_id("user", "4711") == str(uuid.uuid5(NAMESPACE, "user\x1f4711"))
