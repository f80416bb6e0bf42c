"""The OpenAPI schema at /api/schema/ describes SEED-API.md exactly, and Swagger UI works offline."""

import io
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[3]
SEED_API = ROOT.parent / "shared" / "SEED-API.md"
OPTIONS = {
    "retain_full_dates",
    "retain_modified_dates",
    "retain_patient_characteristics",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_uids",
    "retain_safe_private",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
    "clean_pixel_data",
    "accept_burned_in_annotation",
}
# The metadata object of the README's table, plus the service's own keys.
METADATA_KEYS = {
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "patient_age",
    "study_date",
    "study_time",
    "study_description",
    "series_description",
    "accession_number",
    "modality",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "transfer_syntax_uid",
    "sop_class_uid",
    "series_number",
    "instance_number",
    "rows",
    "columns",
    "number_of_frames",
    "bits_allocated",
    "photometric_interpretation",
    "manufacturer",
    "manufacturer_model_name",
    "institution_name",
    "body_part_examined",
    "burned_in_annotation",
    "patient_identity_removed",
    "file_id",
    "study_type",
    "anonymized",
    "size",
}
# SEED-API.md's operations: (method, path) -> request fields, 200 body's keys, error codes.
OPERATIONS = {
    ("post", "/api/dicom/upload"): (
        {"file", "anonymize", "study_type", *OPTIONS},
        {"message", "file_id", "metadata", "status"},
        {400, 401, 403, 413, 415, 422, 503},
    ),
    ("get", "/api/dicom/metadata/{file_id}"): (set(), METADATA_KEYS, {401, 404, 409, 503}),
    ("post", "/api/dicom/anonymize/{file_id}"): (
        OPTIONS,
        {"message", "original_file_id", "anonymized_file_id", "status"},
        {400, 401, 403, 404, 409, 413, 415, 503},
    ),
    ("get", "/api/dicom/download/{file_id}"): (set(), None, {401, 403, 404, 409, 503}),
    ("get", "/api/dicom/status/{file_id}"): (
        set(),
        {"status", "file_id", "detail", "source_file_id"},
        {401, 404, 503},
    ),
}

# Operations this service adds to the contract (never changing one of its own).
OPERATIONS_ADDED = {
    ("post", "/api/dicom/anonymize"): (
        {"file_ids", *OPTIONS},
        {"message", "files"},
        {400, 401, 403, 404, 409, 413, 415, 503},
    ),
}
ALL_OPERATIONS = {**OPERATIONS, **OPERATIONS_ADDED}


@pytest.fixture
def schema(db) -> dict:
    # Anonymous, and with a bad token: the schema needs no login (it holds no patient data).
    response = APIClient().get("/api/schema/", HTTP_AUTHORIZATION="Token not-a-token")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    return yaml.safe_load(response.content)


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_schema_is_valid_openapi_without_warnings(db):
    out = io.StringIO()
    # --fail-on-warn makes any warning of drf-spectacular (a field it had to guess) an error.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert out.getvalue().startswith("openapi: 3.0.3")


def test_the_schema_lists_exactly_the_operations_of_the_contract(schema):
    listed = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert listed == set(ALL_OPERATIONS)


@pytest.mark.parametrize(("method", "path"), list(ALL_OPERATIONS))
def test_each_operation_lists_its_fields_keys_and_errors(schema, method, path):
    fields, keys, errors = ALL_OPERATIONS[(method, path)]
    operation = schema["paths"][path][method]
    assert {("tokenAuth",), ("cookieAuth",)} == {tuple(entry) for entry in operation["security"]}
    if "{file_id}" in path:
        (parameter,) = operation["parameters"]
        assert parameter["name"] == "file_id" and parameter["in"] == "path" and parameter["required"]

    content = operation.get("requestBody", {}).get("content", {})
    for media_type, body in content.items():
        if media_type == "application/dicom":
            continue  # the file itself; its fields are the query parameters, below
        properties = resolve(schema, body["schema"])["properties"]
        assert set(properties) == fields, media_type
    if method == "post" and path.endswith("upload"):
        assert set(content) == {"multipart/form-data", "application/dicom"}
        upload = resolve(schema, content["multipart/form-data"]["schema"])
        assert upload["required"] == ["file"]
        assert upload["properties"]["file"] == {"type": "string", "format": "binary", "description": ANY_TEXT}
        assert content["application/dicom"]["schema"] == {"type": "string", "format": "binary"}
        query = {parameter["name"] for parameter in operation["parameters"] if parameter["in"] == "query"}
        assert query == fields - {"file"}
    elif (method, path) in OPERATIONS_ADDED:
        assert set(content) == {"application/json"}  # a list of ids: JSON only
    elif fields:
        assert set(content) == {
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        }

    responses = operation["responses"]
    assert {int(code) for code in responses} == {200, *errors}
    (media_type, ok), *others = responses["200"]["content"].items()
    assert not others
    if keys is None:
        assert (media_type, ok["schema"]) == ("application/dicom", {"type": "string", "format": "binary"})
    else:
        assert media_type == "application/json"
        body = resolve(schema, ok["schema"])
        assert set(body["properties"]) == keys
        assert body["additionalProperties"] is False
    for code in errors:
        error = resolve(schema, responses[str(code)]["content"]["application/json"]["schema"])
        assert error["properties"] == {"detail": {"type": "string", "description": ANY_TEXT}}
        assert error["required"] == ["detail"]


def test_the_upload_answers_the_metadata_object_of_the_metadata_endpoint(schema):
    upload = resolve(schema, schema["paths"]["/api/dicom/upload"]["post"]["responses"]["200"]["content"])
    body = resolve(schema, upload["application/json"]["schema"])
    assert body["properties"]["metadata"] == {"$ref": "#/components/schemas/Metadata"}
    assert set(resolve(schema, body["properties"]["metadata"])["required"]) == METADATA_KEYS


def test_the_schemes_are_the_token_header_and_the_session_cookie(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["type"] == "apiKey" and schemes["tokenAuth"]["in"] == "header"
    assert schemes["tokenAuth"]["name"] == "Authorization"
    assert schemes["cookieAuth"] == {"type": "apiKey", "in": "cookie", "name": "sessionid"}


@pytest.mark.skipif(not SEED_API.exists(), reason=f"{SEED_API} is not beside this clone")
def test_the_table_of_these_tests_is_the_one_of_seed_api_md():
    """Every heading ``### METHOD /path/{param}`` and every key of its JSON answer, as SEED-API.md writes them."""
    text = SEED_API.read_text()
    headings = re.findall(r"^### (GET|POST) (/api/dicom/\S+)$", text, flags=re.M)
    assert {(method.lower(), path) for method, path in headings} == set(OPERATIONS)
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    for section in sections:
        match = re.match(r"(GET|POST) (\S+)", section)
        if not match:
            continue
        _, keys, _ = OPERATIONS[(match[1].lower(), match[2])]
        for block in re.findall(r"```json\n(.*?)```", section, flags=re.S):
            named = set(re.findall(r'"(\w+)":', block))
            assert named <= (keys or set()), (match[0], named - (keys or set()))
        for field in re.findall(r"^- `(\w+)`:", section, flags=re.M):
            if field != "file_id":  # the path parameter
                assert field in OPERATIONS[(match[1].lower(), match[2])][0], (match[0], field)


def test_swagger_ui_is_served_from_our_own_static_files(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(source.endswith("swagger-ui-bundle.js") for source in sources), sources
    assert all(not urlparse(source).netloc for source in sources), sources
    assert all(
        source.startswith("/static/drf_spectacular_sidecar/") or "api/docs" in source for source in sources
    )


class _AnyText:
    def __eq__(self, other):
        return isinstance(other, str) and bool(other)

    def __repr__(self):
        return "<any text>"


ANY_TEXT = _AnyText()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_swagger_ui_lists_every_operation_with_the_network_cut_off(browser, live_server, tmp_path):
    host = urlparse(live_server.url).netloc
    outside: list[str] = []

    def only_the_server(route):
        if urlparse(route.request.url).netloc == host:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        context.route("**/*", only_the_server)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_function(f"document.querySelectorAll('.opblock').length === {len(ALL_OPERATIONS)}")
        listed = {
            (
                block.query_selector(".opblock-summary-method").inner_text().lower(),
                block.query_selector(".opblock-summary-path").inner_text(),
            )
            for block in page.query_selector_all(".opblock")
        }
        page.screenshot(path=tmp_path / "swagger-ui.png", full_page=True)
        assert "DICOM service API" in page.inner_text(".info .title")
    finally:
        context.close()
    assert {(method, path.replace("\u200b", "")) for method, path in listed} == set(ALL_OPERATIONS)
    assert outside == []
