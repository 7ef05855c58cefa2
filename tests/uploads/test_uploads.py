"""Uploads without a worker: the endpoint stores the file whole in PostgreSQL, the stored bytes
read back exactly (seeking too), two parsers never store a row twice, and the sweeper re-sends
the parse of an upload that went quiet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid

import redis
import sqlalchemy as sa

from etl_app import names
from etl_app.uploads import parse, resume
from etl_app.uploads.reader import open_upload
from etl_app.uploads.store import PIECE_BYTES, display_name
from tasks.uploads import AHEAD_MESSAGES

from tests.helpers.parsing import parse_slice_as_the_task

HEADER = b"student_id,name,grade_level\n"


def students_csv(prefix: str, n: int) -> bytes:
    return HEADER + b"".join(f"{prefix}-{i:04d},Student {i},{1 + i % 12}\n".encode() for i in range(n))


def upload(client, auth, data: bytes, name: str = "students.csv", record_type: str = "students"):
    return client.post(
        f"/api/v1/{record_type}/upload", data={"file": (io.BytesIO(data), name)}, headers=auth,
        content_type="multipart/form-data",
    )  # fmt: skip


def test_an_upload_is_stored_whole_in_pieces_and_answered_202_with_its_ingestion(client, auth, engine, unique):
    data = students_csv(unique, 3) + b"#" * (PIECE_BYTES + 10)  # over one piece (the tail is one odd row)
    r = upload(client, auth, data, name="/home/ada/exports/students.csv")
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["upload"] == {"filename": "students.csv", "format": "csv", "size": len(data), "note": None}
    ident = uuid.UUID(body["ingestion_id"])
    with engine.connect() as conn:
        up = conn.execute(sa.text("SELECT size, sha256, status FROM uploads WHERE id = :i"), {"i": ident}).one()
        pieces = conn.execute(sa.text("SELECT count(*) FROM upload_chunks WHERE upload_id = :i"), {"i": ident})
        source = conn.execute(sa.text("SELECT source FROM ingestions WHERE id = :i"), {"i": ident}).scalar()
        assert tuple(up) == (len(data), hashlib.sha256(data).hexdigest(), "stored")
        assert pieces.scalar() == 2 and source == "upload"
        f = open_upload(conn, ident, len(data), PIECE_BYTES)
        assert f.read() == data
        f.seek(PIECE_BYTES - 5)  # across the pieces' border
        assert f.read(10) == data[PIECE_BYTES - 5 : PIECE_BYTES + 5]
        f.seek(-3, os.SEEK_END)
        assert f.read() == data[-3:]


def test_uploads_refused_before_anything_is_stored(make_app, auth, engine):
    client = make_app(max_upload_bytes=1000).test_client()
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM uploads")).scalar()
    too_big = upload(client, auth, HEADER + b"x" * 2000)
    assert too_big.status_code == 413 and "ETL_MAX_UPLOAD_BYTES" in too_big.get_json()["message"]
    no_file = client.post(
        "/api/v1/students/upload", data={"other": "x"}, headers=auth, content_type="multipart/form-data"
    )
    assert no_file.status_code == 400 and no_file.get_json()["error"] == "missing_file"
    not_multipart = client.post("/api/v1/students/upload", data=b"a,b\n", headers=auth, content_type="text/csv")
    assert not_multipart.status_code == 415
    unknown_type = upload(client, auth, HEADER, record_type="planets")
    assert unknown_type.status_code == 404
    wrong_file = upload(client, auth, b"hello\n")
    assert wrong_file.status_code == 422 and wrong_file.get_json()["error"] == "no_known_column"
    assert "'hello'" in wrong_file.get_json()["message"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM uploads")).scalar() == before


def test_a_file_name_is_only_ever_shown_never_used_as_a_path():
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("..\\..\\boot.ini") == "boot.ini"
    assert display_name("a\x00b\nc.csv") == "abc.csv"
    assert display_name("") == display_name(None) == display_name("../") == "upload"
    assert len(display_name("x" * 1000)) == 255


def stored_upload(client, auth, data: bytes) -> uuid.UUID:
    r = upload(client, auth, data)
    assert r.status_code == 202, r.get_json()
    return uuid.UUID(r.get_json()["ingestion_id"])


def test_a_parser_overtaken_by_another_stores_nothing_and_every_row_lands_once(make_app, auth, engine, unique):
    app = make_app(chunk_size=10)
    runtime = app.extensions["etl"]
    ident = stored_upload(app.test_client(), auth, students_csv(unique, 45))
    sent: list = []

    def run_slice(chunks: int) -> str:
        return parse_slice_as_the_task(runtime, engine, ident, slice_chunks=chunks, after_commit=sent.append)

    with engine.connect() as conn:
        stale = parse.load(conn, ident)  # a parser that read the upload at rows_read 0 ...
    assert run_slice(2) == parse.MORE  # ... while another one stored 20 rows
    with engine.begin() as conn:
        stale.status = "parsing"
        assert parse._store_chunk(runtime, conn, runtime.registry["students"], stale, [], last=False,
                                  after_commit=sent.append) is False  # fmt: skip
    assert run_slice(10) == parse.DONE
    assert run_slice(10) == parse.DONE  # read already: nothing more
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source_row FROM raw_records WHERE ingestion_id = :i ORDER BY source_row"), {"i": ident}
        ).scalars()
        assert list(rows) == list(range(2, 47))
        up = conn.execute(sa.text("SELECT status, rows_read, progress FROM uploads WHERE id = :i"), {"i": ident})
        assert tuple(up.one()) == ("parsed", 45, 1.0)
        accepted = conn.execute(sa.text("SELECT accepted FROM ingestions WHERE id = :i"), {"i": ident}).scalar()
        assert accepted == 45
    assert len(sent) == 5  # one chain a chunk of 10, the last of 5


def test_the_sweeper_resends_the_parse_of_an_upload_that_went_quiet(make_app, auth, engine, unique, api_redis_url,
                                                                   broker_prefix):  # fmt: skip
    app = make_app(outbox_lease_seconds=60)
    runtime = app.extensions["etl"]
    quiet = stored_upload(app.test_client(), auth, students_csv(unique, 2))
    fresh = stored_upload(app.test_client(), auth, students_csv(unique + "f", 2))
    queue = f"{broker_prefix}uploads"  # the parse tasks have their queue: never behind the chains on etl
    client = redis.Redis.from_url(api_redis_url)
    assert any(str(quiet).encode() in m for m in client.lrange(queue, 0, -1))
    assert not [m for m in client.lrange(f"{broker_prefix}etl", 0, -1) if b"etl.upload.parse" in m]
    client.delete(queue)  # the parse tasks the API sent are lost with the broker
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE uploads SET leased_at = now() - interval '61 seconds' WHERE id = :i"), {"i": quiet}
        )
    with engine.connect() as conn:
        sent = resume.resend_stalled(
            conn, runtime.publisher, lease_seconds=runtime.settings.outbox_lease_seconds, commit=conn.commit
        )
    messages = [m for m in client.lrange(queue, 0, -1) if b"etl.upload.parse" in m]
    assert sent >= 1 and len(messages) == sent
    assert any(str(quiet).encode() in m for m in messages)
    assert not any(str(fresh).encode() in m for m in messages)
    with engine.connect() as conn:
        age = conn.execute(sa.text("SELECT now() - leased_at FROM uploads WHERE id = :i"), {"i": quiet}).scalar()
    assert age.total_seconds() < 5  # its lease starts again


def test_retention_drops_the_bytes_of_uploads_read_long_ago_and_keeps_their_record(make_app, auth, engine, unique):
    from etl_app.jobs.runner import run_job

    app = make_app()
    old, recent, unread = (stored_upload(app.test_client(), auth, students_csv(f"{unique}{n}", 2)) for n in range(3))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE uploads SET status = 'parsed', parsed_at = now() - make_interval(days => :d) WHERE id = :i"
            ),
            [{"d": 31, "i": old}, {"d": 29, "i": recent}],
        )
        conn.execute(sa.text("UPDATE uploads SET created_at = now() - interval '40 days' WHERE id = :i"), {"i": unread})
    settings = app.extensions["etl"].settings
    outcome = run_job(engine, "retention", trigger="cli", settings=settings)
    assert outcome.status == "succeeded" and outcome.rows >= 1
    with engine.connect() as conn:
        kept = dict(
            conn.execute(
                sa.text(
                    "SELECT u.id, count(c.seq) FROM uploads u LEFT JOIN upload_chunks c ON c.upload_id = u.id "
                    "WHERE u.id = ANY(:ids) GROUP BY u.id"
                ),
                {"ids": [old, recent, unread]},
            ).all()
        )
        dropped_at = conn.execute(sa.text("SELECT bytes_dropped_at FROM uploads WHERE id = :i"), {"i": old}).scalar()
        size = conn.execute(sa.text("SELECT size FROM uploads WHERE id = :i"), {"i": old}).scalar()
    assert kept == {old: 0, recent: 1, unread: 1}
    assert dropped_at is not None and size == len(students_csv(f"{unique}0", 2))


def test_a_slice_is_not_read_while_the_pipeline_queue_is_long_and_is_read_once_it_is_short(
    make_app, auth, engine, unique, api_redis_url, broker_prefix
):
    app = make_app(chunk_size=10)
    ident = stored_upload(app.test_client(), auth, students_csv(unique, 25))
    broker = redis.Redis.from_url(api_redis_url)
    uploads, etl = f"{broker_prefix}uploads", f"{broker_prefix}etl"
    broker.delete(uploads)  # the API's parse message: this test runs the task itself
    broker.rpush(etl, *[b"a chunk waiting for a stage"] * (AHEAD_MESSAGES + 1))
    task = app.extensions["celery"].tasks[names.PARSE_UPLOAD]

    assert task.apply(args=[{"upload_id": str(ident)}]).get() == parse.WAITING
    with engine.connect() as conn:
        up = conn.execute(sa.text("SELECT rows_read, leased_at FROM uploads WHERE id = :i"), {"i": ident}).one()
    assert up.rows_read == 0 and up.leased_at is not None  # nothing read; the sweeper sees it alive
    [again] = [json.loads(m) for m in broker.lrange(uploads, 0, -1)]
    assert again["headers"]["task"] == names.PARSE_UPLOAD and again["headers"]["eta"]  # a moment later

    broker.delete(etl, uploads)
    assert task.apply(args=[{"upload_id": str(ident)}]).get() == parse.DONE
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT rows_read FROM uploads WHERE id = :i"), {"i": ident}).scalar() == 25
    assert broker.llen(etl) == 3  # its three chunks' chains, on the pipeline's queue
