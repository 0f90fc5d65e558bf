"""``rlhf label serve``: the labelling app, a FastAPI server over the labelling database.

Pages (static, committed with the package in ``static/``): ``/`` where a labeller signs in and
ranks, and ``/report`` (admins) with the quality report. The JSON API they call:

``POST /api/session`` {name, secret}
    sign in with a token or a password; gives a session token for ``Authorization: Bearer``
``GET /api/next``
    the labeller's next task (prompt, answers in their order) and progress
``POST /api/assignments/{id}``
    {ranking: [ids best first], scores: {id: 1-7}, flags: {id: ["unsafe"|"nonsense"]}} or
    {skip: true, reason}; 201 when stored, 200 when the same answer was stored before
``GET /api/report``
    the quality report (admins only)

Every request runs in its own transaction and a submission is committed before the response
says it was saved. Refusals answer ``{"detail": "<what is wrong>"}`` with 401 (no valid
labeller), 403 (another labeller's task, or not an admin), 404, 409 (answered already) or 422
(an incomplete ranking, a score out of range), and store nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rlhf.labelling import accounts, assignments, quality
from rlhf.labelling.assignments import Refused
from rlhf.labelling.db import open_engine, transaction

STATIC = Path(__file__).with_name("static")
JsonBody = Annotated[dict[str, Any], Body()]
Bearer = Annotated[str | None, Header(alias="Authorization")]


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="rlhf labelling", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Refused)
    def refused(_request: Request, e: Refused) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(accounts.AuthError)
    def unauthorised(_request: Request, e: accounts.AuthError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=401)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/report", include_in_schema=False)
    def report_page() -> FileResponse:
        return FileResponse(STATIC / "report.html")

    @app.post("/api/session")
    def sign_in(body: JsonBody) -> dict[str, Any]:
        name, secret = body.get("name"), body.get("secret")
        if not isinstance(name, str) or not isinstance(secret, str) or not name or not secret:
            raise Refused(422, "give your name and your token or password")
        with transaction(engine) as session:
            token = accounts.sign_in(session, name.strip(), secret.strip())
            account = accounts.authenticate(session, token)
        return {"token": token, "name": account.name, "admin": account.admin}

    @app.get("/api/next")
    def next_task(authorization: Bearer = None) -> dict[str, Any]:
        with transaction(engine) as session:
            account = accounts.authenticate(session, _bearer(authorization))
            return {
                "name": account.name,
                "admin": account.admin,
                "task": assignments.next_task(session, account),
                "progress": assignments.progress(session, account.id).to_json(),
            }

    @app.post("/api/assignments/{assignment_id}")
    def answer(
        assignment_id: int,
        body: JsonBody,
        authorization: Bearer = None,
    ) -> JSONResponse:
        for attempt in (1, 2):
            try:
                with transaction(engine) as session:
                    account = accounts.authenticate(session, _bearer(authorization))
                    stored_now = assignments.submit(session, account, assignment_id, body)
                    done = assignments.progress(session, account.id).to_json()
                break  # committed: only now is it reported saved
            except IntegrityError:
                if attempt == 2:
                    raise
                # another request stored this assignment's answer first: look again
        return JSONResponse(
            {"saved": True, "stored_now": stored_now, "progress": done},
            status_code=201 if stored_now else 200,
        )

    @app.get("/api/report")
    def report(authorization: Bearer = None) -> dict[str, Any]:
        with transaction(engine) as session:
            account = accounts.authenticate(session, _bearer(authorization))
            if not account.admin:
                raise Refused(403, "the quality report is for admins")
            return quality.report(quality.read_labels(session))

    return app


def serve(db: str, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(open_engine(db)), host=host, port=port, log_level="info")
