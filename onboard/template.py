"""The customer sheet to fill in: the columns, one example row, and (xlsx) instructions and dropdowns.

The example row lives here so that a sheet still holding it can be recognised.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from onboard.errors import InputError, UsageError
from onboard.files import atomic, refuse_link
from onboard.sheet import FIELDS
from onboard.workbook import write_template_workbook

TEMPLATE_EXAMPLE = {
    "customer_id": "4711", "user_id": "", "location_ref": "home", "location_id": "",
    "location_type": "Residential", "meter_point_ids": "707057500012345671", "latitude": "59.9139",
    "longitude": "10.7522", "resource_ref": "SN-0001", "resource_id": "", "resource_type": "HotWaterTank",
    "resource_meter_point_id": "",
}

TEMPLATE_HELP = {
    "customer_id": "Your own key for the customer (required unless user_id is given).",
    "user_id": "Optional: the Spark userId to use. Blank: derived from customer_id.",
    "location_ref": "Your key for one site of the customer. Blank when the row has no site.",
    "location_id": "Optional: the Spark locationId to use. Blank: derived.",
    "location_type": "Residential, Commercial, Other or Unknown. Blank: the API's default.",
    "meter_point_ids": "18-digit meter point ids; several in one cell separated by , ; | or line breaks.",
    "latitude": "WGS84 degrees, -90..90. Give both latitude and longitude, or neither.",
    "longitude": "WGS84 degrees, -180..180.",
    "resource_ref": "Your key for the device (serial number, VIN). Optional.",
    "resource_id": "Optional: the Spark resourceId to use. Blank: derived.",
    "resource_type": "Generic, Charger, HotWaterTank, HVAC, SolarInverter or Vehicle.",
    "resource_meter_point_id": "Optional 18-digit meter point id of the device itself.",
}


def write_template(path: Path, force: bool = False) -> None:
    """Write the template; an existing file there is kept unless `force`, since it is most likely a
    sheet someone has filled in."""
    columns = list(FIELDS)
    suffix = path.suffix.lower()
    refuse_link(path)
    if path.exists() and not force:
        raise UsageError(f"{path} already exists: choose another name, or add --force to replace it")
    if suffix == ".xlsx":
        with atomic(path) as temporary:
            write_template_workbook(temporary, columns, TEMPLATE_EXAMPLE, TEMPLATE_HELP)
    elif suffix == ".csv":
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(columns)
        writer.writerow([TEMPLATE_EXAMPLE[c] for c in columns])
        with atomic(path) as temporary:
            temporary.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        raise InputError(f"{path.name}: the template is written as .xlsx or .csv")
