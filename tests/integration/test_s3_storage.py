"""rlhf.storage against a real S3 server (moto's, over HTTP): publish with the manifest last,
verified and cached reads, corruption, and an endpoint that goes away mid-upload."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from servers import FAKE_CREDENTIALS, s3

from rlhf import storage
from rlhf.storage import s3 as s3_storage

MiB = 1 << 20
# Small parts so a 6 MiB file goes up in two parts (S3's minimum part size is 5 MiB).
MULTIPART = s3_storage.TransferSettings(
    multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2
)


def make_folder(root: Path, big: int = 0) -> Path:
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.bin").write_bytes(os.urandom(big or 3000))
    storage.write_manifest(folder, {"artifact": "test"})
    return folder


def objects(bucket: str, prefix: str = "") -> dict[str, int]:
    listed = s3().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


def assert_same_files(a: Path, b: Path) -> None:
    files_a = {p.relative_to(a).as_posix(): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix(): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert files_a == files_b


def test_folder_publish_is_multipart_with_manifest_last_and_reads_are_cached(
    bucket, faulty_s3, fresh_cache, tmp_path
):
    folder = make_folder(tmp_path, big=6 * MiB)
    uri = f"s3://{bucket}/models/m1"
    s3_storage.upload(folder, uri, MULTIPART)

    writes = [r for r in faulty_s3.requests if r.split()[0] in ("PUT", "POST", "DELETE")]
    # The old manifest goes first, the new one last; the big file went up in parts.
    assert writes[0] == f"DELETE /{bucket}/models/m1/manifest.json"
    assert writes[-1] == f"PUT /{bucket}/models/m1/manifest.json"
    parts = [w for w in writes if "weights.bin" in w and "partNumber=" in w]
    assert len(parts) == 2
    manifest = json.loads((folder / "manifest.json").read_text())
    assert objects(bucket, "models/m1/") == {
        "models/m1/config.json": 8,
        "models/m1/sub/weights.bin": 6 * MiB,
        "models/m1/manifest.json": (folder / "manifest.json").stat().st_size,
    }
    head = s3().head_object(Bucket=bucket, Key="models/m1/sub/weights.bin")
    assert head["Metadata"]["sha256"] == manifest["files"][1]["sha256"]

    faulty_s3.requests.clear()
    local = storage.local_path(uri)
    assert_same_files(local, folder)
    downloads = [r for r in faulty_s3.requests if r.startswith("GET") and "weights.bin" in r]
    assert downloads, "the weights were downloaded"
    # Cached by checksum: under the manifest's sha256, files as blobs named by theirs.
    assert local.parent == fresh_cache / "folders"
    sha = manifest["files"][1]["sha256"]
    assert (fresh_cache / "blobs" / sha[:2] / sha).is_file()

    faulty_s3.requests.clear()
    assert storage.local_path(uri + "/") == local
    assert faulty_s3.requests == [f"GET /{bucket}/models/m1/manifest.json"]

    # With a fresh cache and small parts, the download is multipart too: ranged GETs.
    shutil.rmtree(fresh_cache)
    faulty_s3.requests.clear()
    assert_same_files(s3_storage.download(uri, MULTIPART), folder)
    gets = [r for r in faulty_s3.requests if r == f"GET /{bucket}/models/m1/sub/weights.bin"]
    assert len(gets) == 2


def test_publishing_again_uploads_only_what_changed(bucket, faulty_s3, fresh_cache, tmp_path):
    """A retried multi-node task publishes its inputs to the same prefix again."""
    folder = make_folder(tmp_path)
    uri = f"s3://{bucket}/staging/run/ppo/inputs/sft_model"
    s3_storage.upload(folder, uri)
    faulty_s3.requests.clear()
    assert s3_storage.upload(folder, uri) == uri
    assert faulty_s3.requests == [f"GET /{bucket}/staging/run/ppo/inputs/sft_model/manifest.json"]

    (folder / "config.json").write_text('{"a": 2}')
    storage.write_manifest(folder, {"artifact": "test"})
    faulty_s3.requests.clear()
    s3_storage.upload(folder, uri)
    writes = [r.split("?")[0] for r in faulty_s3.requests if r.split()[0] in ("PUT", "DELETE")]
    assert writes == [
        f"DELETE /{bucket}/staging/run/ppo/inputs/sft_model/manifest.json",
        f"PUT /{bucket}/staging/run/ppo/inputs/sft_model/config.json",
        f"PUT /{bucket}/staging/run/ppo/inputs/sft_model/manifest.json",
    ]
    assert_same_files(storage.local_path(uri), folder)

    job = tmp_path / "job.json"
    job.write_text('{"stage": "ppo"}')
    file_uri = f"s3://{bucket}/staging/run/ppo/job.json"
    storage.publish(job, file_uri)
    faulty_s3.requests.clear()
    storage.publish(job, file_uri)
    assert faulty_s3.requests == [f"HEAD /{bucket}/staging/run/ppo/job.json"]
    job.write_text('{"stage": "grpo"}')
    storage.publish(job, file_uri)
    assert s3().get_object(Bucket=bucket, Key="staging/run/ppo/job.json")["Body"].read() == (
        b'{"stage": "grpo"}'
    )


def test_single_file_round_trip_keeps_its_name_and_checksum(bucket, fresh_cache, tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text('{"prompt": "p", "response": "r"}\n')
    uri = f"s3://{bucket}/data/train.jsonl"
    assert storage.publish(src, uri) == uri
    local = storage.local_path(uri)
    assert local.name == "train.jsonl" and local.read_bytes() == src.read_bytes()
    assert local.parent.name == storage.sha256_file(src)


def test_corrupted_object_is_detected_on_read(bucket, fresh_cache, tmp_path):
    folder = make_folder(tmp_path)
    uri = f"s3://{bucket}/models/m2"
    storage.publish(folder, uri)
    good = (folder / "sub" / "weights.bin").read_bytes()
    bad = bytes([good[0] ^ 1]) + good[1:]  # one flipped bit, same size
    s3().put_object(Bucket=bucket, Key="models/m2/sub/weights.bin", Body=bad)

    with pytest.raises(storage.IntegrityError) as err:
        storage.local_path(uri)
    assert f"s3://{bucket}/models/m2/sub/weights.bin: checksum mismatch" in str(err.value)
    # Nothing half-made is left in the cache: no folder, no blob of the bad bytes.
    assert not (fresh_cache / "folders").exists() or not any((fresh_cache / "folders").iterdir())
    blobs = [p for p in (fresh_cache / "blobs").rglob("*") if p.is_file()]
    assert all(p.read_bytes() != bad for p in blobs)

    s3().put_object(Bucket=bucket, Key="models/m2/sub/weights.bin", Body=good[:-1])
    with pytest.raises(storage.IntegrityError, match=r"weights.bin: 2999 bytes, the manifest"):
        storage.local_path(uri)


def test_folder_without_manifest_is_refused(bucket, fresh_cache):
    s3().put_object(Bucket=bucket, Key="raw/config.json", Body=b"{}")
    with pytest.raises(storage.MissingManifestError, match=rf"s3://{bucket}/raw: a folder with no"):
        storage.local_path(f"s3://{bucket}/raw")
    with pytest.raises(storage.StorageError, match="no such object or folder"):
        storage.local_path(f"s3://{bucket}/nothing/here")


def test_publish_retries_through_a_short_outage(bucket, faulty_s3, fresh_cache, tmp_path):
    folder = make_folder(tmp_path)
    uri = f"s3://{bucket}/models/m3"
    faulty_s3.go_away(after=2, outage=3)  # mid-upload: after the manifest delete + 1 object
    storage.publish(folder, uri)
    assert len(faulty_s3.cut) == 3  # three requests were reset, and retried
    assert faulty_s3.requests[-1] == f"PUT /{bucket}/models/m3/manifest.json"
    assert_same_files(storage.local_path(uri), folder)


def test_failed_publish_leaves_no_manifest(bucket, faulty_s3, fresh_cache, tmp_path, monkeypatch):
    folder = make_folder(tmp_path)
    uri = f"s3://{bucket}/models/m4"
    storage.publish(folder, uri)  # a first, complete publish
    (folder / "config.json").write_text('{"a": 2}')
    storage.write_manifest(folder, {"artifact": "test", "version": 2})

    # botocore's own settings: two attempts per request, so the test is quick.
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    faulty_s3.go_away(after=2, outage=None)  # the endpoint dies mid-upload, for good
    with pytest.raises(storage.StorageError) as err:
        storage.publish(folder, uri)
    message = str(err.value)
    assert f"s3://{bucket}/models/m4/" in message
    assert not any(secret in message for secret in FAKE_CREDENTIALS)
    assert len(faulty_s3.cut) == 2  # AWS_MAX_ATTEMPTS was honoured

    # Straight to the server: the old manifest is gone and no new one was written, so
    # readers see no folder rather than a mix of old and new files.
    faulty_s3.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{faulty_s3.target_port}")
    assert "models/m4/manifest.json" not in objects(bucket, "models/m4/")
    with pytest.raises(storage.MissingManifestError):
        storage.local_path(uri)


def test_prepare_stage_publishes_through_an_outage_and_fails_cleanly_without_one(
    demo_files, bucket, faulty_s3, fresh_cache, tmp_path, monkeypatch
):
    from rlhf.config import PrepareConfig
    from rlhf.data.artifacts import load_split
    from rlhf.stages import prepare

    inputs = prepare.PrepareInputs(*([str(demo_files[n])] for n in prepare.ARTIFACTS[:4]))

    def outputs(root: Path) -> prepare.PrepareOutputs:
        folders = (str(root / n) for n in prepare.ARTIFACTS)
        return prepare.PrepareOutputs(*folders, str(root / "rejects.jsonl"))

    # The endpoint goes away for three requests while the first artifact is going up.
    faulty_s3.go_away(after=4, outage=3)
    root = f"s3://{bucket}/prepared/ok"
    prepare.run(PrepareConfig(publish_to=root), inputs, outputs(tmp_path / "ok"))
    assert len(faulty_s3.cut) == 3
    for name in prepare.ARTIFACTS:
        split = "test" if name == "eval_prompts" else "train"
        local = load_split(str(tmp_path / "ok" / name), split)
        assert load_split(f"{root}/{name}", split)[:] == local[:]

    # For good this time: the stage fails with the object's URI, and no artifact has a
    # manifest, neither the one cut off mid-upload nor those never started.
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    faulty_s3.go_away(after=4, outage=None)
    root = f"s3://{bucket}/prepared/bad"
    with pytest.raises(storage.StorageError, match=rf"s3://{bucket}/prepared/bad/sft/"):
        prepare.run(PrepareConfig(publish_to=root), inputs, outputs(tmp_path / "bad"))
    faulty_s3.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{faulty_s3.target_port}")
    written = objects(bucket, "prepared/bad/")
    assert written, "the upload had started"
    assert not [k for k in written if k.endswith("manifest.json")]
    with pytest.raises(storage.MissingManifestError):
        load_split(f"{root}/sft", "train")
