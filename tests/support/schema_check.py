"""ward's HTTP API against its own OpenAPI document, with schemathesis.

Runs the schemathesis CLI (from the test virtualenv) against the document a
running ward serves at /v1/openapi.json, in passes:

  api             every operation but the admin API's (the model stays
                  loaded throughout);
  admin-token     the admin API, with the bearer token (it reloads and
                  unloads, so it runs after the rest);
  admin-no-token  the admin API without the token, or with a made-up one
                  (schemathesis makes them from the security scheme): 401;
  admin-disabled  the admin API of a ward without server.admin_token: it
                  does not exist (404).

Checks on every response: not_a_server_error (no 5xx), and conformance to
the document: the status code is documented, the content type is the
documented one, the body matches the documented schema, and documented
response headers are as documented.

GET /v1/events is left out: it is a server-sent event stream that never ends.

Every pass is bounded in test cases per operation and phase
(--max-examples) and in time (--max-time, --admin-time: schemathesis
fuzzes until the time is spent). Network: only the URLs given (127.0.0.1).

Prints each pass's report and its failures (the request and the answer of
each); the last lines are "cases: N" and "ok: all checks passed" when
nothing failed. Exits non-zero on any failure.

usage: schema_check.py --url URL --token TOKEN --disabled-url URL
                       [--max-examples N] [--max-time S] [--admin-time S]
                       [--seed N] [--document FILE]
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def run_pass(name, url, seconds, extra, args):
    """Runs one schemathesis pass; returns (ok, cases, failures)."""
    with tempfile.TemporaryDirectory() as scratch:
        ndjson = os.path.join(scratch, "events.ndjson")
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            args.document or f"{url}/v1/openapi.json",
            "--url",
            url,
            "--checks",
            CHECKS,
            "--workers",
            "1",
            "--max-examples",
            str(args.max_examples),
            "--max-time",
            str(seconds),
            "--seed",
            str(args.seed),
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--exclude-operation-id",
            "events",
            "--no-color",
            "--output-truncate",
            "false",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            ndjson,
            *extra,
        ]
        env = dict(os.environ)
        # No proxy: the only server is ward on loopback.
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(k, None)
            env.pop(k.lower(), None)
        env["NO_PROXY"] = env["no_proxy"] = "*"
        # Run in the scratch directory: schemathesis may write state there.
        proc = subprocess.run(
            cmd,
            cwd=scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=seconds * 3 + 60,
        )
        print(f"=== pass {name}: schemathesis exited {proc.returncode}")
        print(proc.stdout)
        cases, failures = summarize(ndjson)
    print(f"pass {name}: {cases} test cases, {len(failures)} failures")
    for f in failures:
        print(f"  FAILURE [{name}] {f}")
    # Exit codes: 0 all passed, anything else a failure or an error.
    return proc.returncode == 0 and not failures, cases, failures


def summarize(path):
    """Counts test cases and collects failures from the ndjson event log."""
    cases = 0
    failures = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0, ["no ndjson report was written"]
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        for kind, body in event.items():
            if not isinstance(body, dict):
                continue
            if kind == "ScenarioFinished":
                recorder = body.get("recorder") or {}
                cases += len(recorder.get("cases") or {})
                for case_id, checks in (recorder.get("checks") or {}).items():
                    for check in checks:
                        if check.get("status") == "failure":
                            failures.append(describe(recorder, case_id, check))
            elif kind in ("NonFatalError", "FatalError"):
                failures.append(f"{kind}: {short(body, 2000)}")
    # A failure shows in every case that hits it: keep one of each.
    unique = []
    for f in failures:
        if f not in unique:
            unique.append(f)
    return cases, unique


def describe(recorder, case_id, check):
    """One failed check, with the request and answer that show it."""
    failure = (check.get("failure_info") or {}).get("failure") or {}
    interaction = (recorder.get("interactions") or {}).get(case_id) or {}
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    body = decode(request.get("body"))
    answer = decode(response.get("content"))
    lines = [
        f"{check.get('name')}: {failure.get('operation') or recorder.get('label')}: "
        f"{failure.get('title', '')}",
        f"    {short(failure.get('message', ''))}",
        f"    request: {request.get('method')} {request.get('uri')}"
        + (f" body {short(body, 300)}" if body else ""),
        f"    answer: {response.get('status_code')} {short(answer, 300)}",
    ]
    return "\n".join(lines)


def decode(content):
    """A recorded body: text, base64 or absent."""
    if content is None:
        return ""
    if isinstance(content, dict):
        if "$base64" in content:
            raw = base64.b64decode(content["$base64"])
            return raw.decode("utf-8", "replace")
        if "string" in content:
            return content["string"]
    return str(content)


def short(v, n=600):
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="a ward with server.admin_token")
    p.add_argument("--token", required=True, help="its admin token")
    p.add_argument("--disabled-url", required=True, help="a ward without an admin token")
    p.add_argument("--max-examples", type=int, default=12, help="test cases per operation and phase")
    p.add_argument("--max-time", type=int, default=30, help="seconds for the API pass")
    p.add_argument("--admin-time", type=int, default=10, help="seconds for each admin pass")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--document",
        help="check against this file instead of the served document (for editing it)",
    )
    args = p.parse_args()

    admin = ["--include-tag", "admin"]
    bearer = ["--header", f"Authorization: Bearer {args.token}"]
    passes = [
        # Everything but the admin API, with the model loaded throughout.
        ("api", args.url, args.max_time, ["--exclude-tag", "admin"]),
        # The admin API: it reloads and unloads, so it runs after the rest.
        ("admin-token", args.url, args.admin_time, admin + bearer),
        ("admin-no-token", args.url, args.admin_time, admin),
        ("admin-disabled", args.disabled_url, args.admin_time, admin),
    ]
    all_ok = True
    total = 0
    for name, url, seconds, extra in passes:
        ok, cases, _ = run_pass(name, url, seconds, extra, args)
        all_ok &= ok
        total += cases
    print(f"cases: {total}")
    if not all_ok:
        print("FAILED: ward's answers differ from its OpenAPI document (see above)")
        return 1
    print("ok: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
