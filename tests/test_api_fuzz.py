"""schemathesis against the API's own OpenAPI schema: every operation, generated and
mutated inputs, with the bootstrap token, against a real database and broker. No answer may
be a 5xx, and every answer must conform to the schema (status code, content type, body)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.broker import BrokerProcess
from tests.fixtures.gateway import TOKEN, RunningGateway, red_gas_finding, start_gateway

EXAMPLES_PER_OPERATION = int(os.environ.get("OFFSITE_FUZZ_EXAMPLES", "100"))
"""Per operation and generation mode; the whole run stays within about two minutes on the
two-core CI machine. Raise it locally for a longer hunt."""

_AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class FuzzRun:
    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


Known = dict[str, list[str]]
"""Ids of records that exist, by parameter or body field name."""


def _with_known_ids(strategy: st.SearchStrategy[Any], known: Known) -> st.SearchStrategy[Any]:
    """Most generated ids name nothing and answer 404; often swapping in the id of a record
    that exists takes the fuzzer past the lookup into the transitions and their checks."""

    def swap(drawn: tuple[Any, list[int]]) -> Any:
        case, picks = drawn
        for i, (name, ids) in enumerate(sorted(known.items())):
            pick = picks[i % len(picks)]
            if not ids or pick == 0:
                continue
            value = ids[(pick - 1) % len(ids)]
            if case.path_parameters and name in case.path_parameters:
                case.path_parameters[name] = value
            if isinstance(case.body, dict) and name in case.body:
                case.body[name] = value
        return case

    picks = st.lists(st.integers(0, 3), min_size=1, max_size=len(known) or 1)
    return st.tuples(strategy, picks).map(swap)


def _fuzz_operation(
    operation: Any,
    base_url: str,
    session: requests.Session,
    run: FuzzRun,
    mode: GenerationMode,
    known: Known,
) -> None:
    strategy = _with_known_ids(operation.as_strategy(generation_mode=mode), known)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def hunt(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=_AUTH, timeout=30)
        run.calls += 1
        run.by_status[response.status_code] = run.by_status.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    hunt()


def _fuzz_all(base_url: str, schema_doc: dict[str, Any], known: Known) -> FuzzRun:
    schema = schemathesis.openapi.from_dict(schema_doc)
    run = FuzzRun()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz_operation(operation, base_url, session, run, mode, known)
                except Unsatisfiable:
                    # nothing to negate: an operation without parameters, body or token
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except (Exception, BaseExceptionGroup) as exc:  # every operation is reported
                    run.failures.append(f"{operation.label} ({mode.value}): {exc}")
    return run


async def _seed(gw: RunningGateway) -> Known:
    """Records for the fuzzer to act on: a red detector clue with its case and evidence, a
    reported clue, a case task and a command."""
    finding = red_gas_finding()
    now = finding.at
    red = await gw.runtime.casework.handle(finding, gw.runtime.directory["gas-0001"])
    clue = (await gw.http.get(f"/api/v1/clues/{red}")).json()
    reported = await gw.http.post(
        "/api/v1/clues",
        json={
            "channel": "hotline_12345",
            "subject_id": "rest-qinba-hotpot",
            "matter_id": "gas-safety",
            "description": "smell of gas",
            "reported_at": now.isoformat(),
        },
    )
    assert reported.status_code == 201, reported.text
    case_id = str(clue["case_id"])
    task = await gw.http.post(
        f"/api/v1/cases/{case_id}/tasks",
        json={"title": "visit", "assignee": "officer", "due_at": now.isoformat()},
    )
    assert task.status_code == 201, task.text
    command = await gw.http.post(
        "/api/v1/commands", json={"device_id": "gas-0002", "command": "close_valve"}
    )
    assert command.status_code == 201, command.text
    return {
        "clue_id": [red, reported.json()["clue"]["id"]],
        "case_id": [case_id],
        "evidence_id": [str(clue["evidence_id"])],
        "task_id": [str(t["id"]) for t in task.json()["tasks"]],
        "command_id": [command.json()["id"]],
        "device_id": ["gas-0001", "elev-0001", "boiler-0001"],
        "subject_id": ["rest-hanjiang-noodle", "rest-qinba-hotpot"],
        "matter_id": ["gas-safety", "special-equipment"],
        "department": ["housing", "market", "fire"],
        "to_department": ["market", "emergency", "housing"],
    }


async def test_no_server_error_and_schema_conformance_for_any_input(
    database_url: str, broker: BrokerProcess
) -> None:
    async with start_gateway(database_url, broker.url, silent_sweep_s=3600.0) as gw:
        known = await _seed(gw)
        schema_doc = (await gw.http.get("/openapi.json")).json()
        # The server runs in this event loop; the fuzzer's blocking client runs beside it.
        run = await asyncio.to_thread(_fuzz_all, gw.base_url, schema_doc, known)
    print(f"schemathesis: {run.calls} requests, by status {sorted(run.by_status.items())}")
    operations = sum(len(methods) for methods in schema_doc["paths"].values())
    assert run.calls >= operations * 2, "every operation was called in both modes"
    assert not run.failures, "\n\n".join(run.failures)


def test_the_hunt_can_fail() -> None:
    """The checks do catch a 500 and a body that does not match its schema."""
    schema = schemathesis.openapi.from_dict(
        {
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/x": {
                    "get": {
                        "responses": {
                            "200": {
                                "description": "ok",
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {"id": {"type": "string"}},
                                        }
                                    }
                                },
                            }
                        }
                    }
                }
            },
        }
    )
    operation = schema["/x"]["GET"]
    case = operation.Case()
    for status, body in ((500, b'{"id": "a"}'), (200, b'{"id": 1}')):
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers["Content-Type"] = "application/json"
        response.request = requests.Request("GET", "http://test/x").prepare()
        response.url = "http://test/x"
        raised = False
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseExceptionGroup:
            raised = True
        assert raised, status
