"""Manifests, local publishing and redaction (the S3 side is in tests/integration)."""

from __future__ import annotations

import json

import pytest

from rlhf import storage
from rlhf.pipeline.component_runner import publish_destination
from rlhf.redaction import redact
from rlhf.storage import manifest


def test_manifest_lists_files_and_catches_changes(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    written = storage.write_manifest(tmp_path, {"artifact": "x"})
    # sha256("abc") is the FIPS 180-2 test vector.
    assert written["files"] == [
        {
            "path": "a.txt",
            "bytes": 3,
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }
    ]
    assert storage.verify_folder(tmp_path)["artifact"] == "x"
    (tmp_path / "a.txt").write_text("abd")
    with pytest.raises(storage.IntegrityError, match=r"a.txt: checksum mismatch"):
        storage.verify_folder(tmp_path)
    (tmp_path / "a.txt").write_text("ab")
    with pytest.raises(storage.IntegrityError, match=r"a.txt: 2 bytes, the manifest says 3"):
        storage.verify_folder(tmp_path)


@pytest.mark.parametrize("path", ["../up", "/abs", "a/../../b", "manifest.json", ""])
def test_manifest_refuses_paths_that_leave_the_folder(path):
    data = json.dumps({"files": [{"path": path, "bytes": 1, "sha256": "0" * 64}]}).encode()
    with pytest.raises(storage.IntegrityError, match="unsafe path|files"):
        manifest.parse(data, "s3://b/m/manifest.json")


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(storage.MissingManifestError, match="no manifest.json"):
        storage.read_manifest(tmp_path)


def test_local_publish_adds_a_manifest_to_a_plain_folder(tmp_path):
    src = tmp_path / "tok"
    src.mkdir()
    (src / "vocab.json").write_text("{}")
    dest = tmp_path / "published" / "tok"
    assert storage.publish(src, str(dest)) == str(dest)
    assert storage.verify_folder(dest)["files"][0]["path"] == "vocab.json"
    assert not (src / "manifest.json").exists()  # the source is left alone


def test_publish_destination_per_stage_and_run():
    assert publish_destination("", "run-1", "sft") == {}
    assert publish_destination("s3://b/root/", "run-1", "ppo") == {
        "publish_to": "s3://b/root/run-1/policy"
    }


def test_redact_hides_credentials_and_url_userinfo(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t/value+xyz")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    text = redact("key AKIAEXAMPLE secret s3cr3t/value+xyz at http://bob:pw@mlflow:5000/x")
    assert text == "key *** secret *** at http://***@mlflow:5000/x"


def test_mlflow_params_and_tags_are_redacted(monkeypatch):
    from mlflow.tracking import MlflowClient

    from rlhf import tracking

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t/value+xyz")
    with tracking.stage_run("redaction-test") as tracker:
        tracker.log_params({"oops": "--secret s3cr3t/value+xyz"})
        tracker.set_tags({"uri": "postgresql://u:s3cr3t/value+xyz@db/x"})
    run = MlflowClient(tracking.tracking_uri()).get_run(tracker.run_id)
    assert run.data.params["oops"] == "--secret ***"
    assert run.data.tags["uri"] == "postgresql://***@db/x"
