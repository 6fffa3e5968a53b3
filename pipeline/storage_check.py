"""Is the storage of every bucket path reachable, with credentials it accepts? Asked once on the
launcher, with short time-outs, before any other file access.

Beam's S3 layer retries a refused connection with exponential back-off: an unreachable endpoint
took 7 min 30 s to end in a traceback (measured). Here one listing request per bucket, with a 3 s
connect time-out and two attempts, answers in seconds: ValueError (exit 2) for what the user must
fix (no credentials, credentials refused, no such bucket), StorageUnavailableError (exit 5) for a
storage that cannot be reached or fails (running again later may work).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from pipeline.errors import StorageUnavailableError

__all__ = ["check_storage_reachable"]

_CONNECT_TIMEOUT_S = 3
_READ_TIMEOUT_S = 5
_ATTEMPTS = 2
_FIX_CREDENTIALS = ("pass --s3_access_key_id and --s3_secret_access_key (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "or an AWS profile)")


def check_storage_reachable(paths: Iterable[str], pipeline_args: Sequence[str], consequence: str = "Nothing was written.") -> None:
    """Raises ValueError or StorageUnavailableError (see the module) for the first s3:// or gs://
    bucket among `paths` that cannot be listed; ValueError for a scheme no filesystem reads here
    (hdfs:// and azfs:// without their extra, a typo). Reachability of hdfs:// and azfs:// is
    left to their filesystems.
    consequence: what the StorageUnavailableError's message ends with (what the caller left)."""
    paths = [p for p in paths if isinstance(p, str)]
    _check_filesystems_exist(paths)
    try:
        s3_buckets = _buckets(paths, "s3://")
        if s3_buckets:
            client, endpoint = _s3_client(pipeline_args)
            for bucket in s3_buckets:
                _list_one(client, bucket, endpoint)
        gcs_buckets = _buckets(paths, "gs://")
        if gcs_buckets:
            _check_gcs(gcs_buckets, pipeline_args)
    except StorageUnavailableError as error:
        raise StorageUnavailableError(f"{error} {consequence}".strip()) from None


# Schemes Beam reads besides local paths, s3:// and gs:// (checked below, with their own words):
# the module each needs and the Beam extra that installs it.
_OTHER_FILESYSTEMS = {"hdfs": ("hdfs", "hadoop", " and the --hdfs_host, --hdfs_port and --hdfs_user flags"),
                      "azfs": ("azure.storage.blob", "azure", " and --azure_connection_string (or --blob_service_endpoint)")}


def _check_filesystems_exist(paths: Sequence[str]) -> None:
    """ValueError, in one line, for a path whose scheme Beam has no filesystem for, or whose
    filesystem's client library is not installed (Beam's own errors: tracebacks, NameError)."""
    import importlib

    for path in paths:
        scheme = path.split("://", 1)[0].lower() if "://" in path else None
        if scheme in (None, "s3", "gs", "file"):
            continue
        if scheme in _OTHER_FILESYSTEMS:
            module, extra, flags = _OTHER_FILESYSTEMS[scheme]
            try:
                importlib.import_module(module)
            except ImportError:
                raise ValueError(f"{scheme}:// paths ({path!r}) need Beam's {extra!r} extra: pip install "
                                 f"'apache-beam[{extra}]'{flags}.") from None
            continue
        raise ValueError(f"no filesystem reads {scheme}:// paths ({path!r}); use a local path, gs://, s3://, hdfs:// or "
                         f"azfs:// (each bucket scheme with its extra), or check the path for a typo.")


def _buckets(paths: Sequence[str], scheme: str) -> list[str]:
    return sorted({p[len(scheme):].split("/", 1)[0] for p in paths if p.startswith(scheme)})


def _check_gcs(buckets: Sequence[str], pipeline_args: Sequence[str]) -> None:
    """One listing per bucket through the client Beam's GCS filesystem uses (the same credentials,
    anonymous when there are none; STORAGE_EMULATOR_HOST for an emulator)."""
    import os

    from apache_beam.options.pipeline_options import PipelineOptions

    try:
        import requests
        from apache_beam.io.gcp.gcsio import create_storage_client
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions
    except ImportError:
        raise ValueError("gs:// paths need the 'gcp' extra: pip install 'attribution-pipeline[gcp]' (apache-beam[gcp]).") from None

    client = create_storage_client(PipelineOptions(list(pipeline_args)))
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "Google Cloud Storage"
    for bucket in buckets:
        try:
            next(iter(client.list_blobs(bucket, max_results=1, timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S), retry=None)), None)
        except auth_exceptions.GoogleAuthError as error:
            raise ValueError(f"no usable Google Cloud credentials for gs://{bucket} ({error}); run `gcloud auth "
                             f"application-default login` or set GOOGLE_APPLICATION_CREDENTIALS.") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise StorageUnavailableError(
                f"cannot reach the storage of gs://{bucket} at {endpoint} ({type(error).__name__}); check the network "
                f"(or STORAGE_EMULATOR_HOST), or run again once the storage is up."
            ) from None
        except exceptions.NotFound:
            raise ValueError(f"bucket gs://{bucket} does not exist at {endpoint}; check the path (or create the bucket).") from None
        except (exceptions.Forbidden, exceptions.Unauthorized) as error:
            raise ValueError(f"the storage refused access to gs://{bucket} ({error.code}); check the credentials and the "
                             f"bucket's permissions.") from None
        except exceptions.GoogleAPICallError as error:
            raise StorageUnavailableError(f"the storage of gs://{bucket} failed a listing ({error.code}); run again later.") from None


def _s3_client(pipeline_args: Sequence[str]):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ValueError("s3:// paths need the 'aws' extra: pip install 'attribution-pipeline[aws]' (apache-beam[aws]).") from None
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    options = PipelineOptions(list(pipeline_args)).view_as(S3Options)
    config = Config(connect_timeout=_CONNECT_TIMEOUT_S, read_timeout=_READ_TIMEOUT_S,
                    retries={"max_attempts": _ATTEMPTS, "mode": "standard"})
    client = boto3.session.Session().client(
        "s3", region_name=options.s3_region_name, endpoint_url=options.s3_endpoint_url, use_ssl=not options.s3_disable_ssl,
        verify=options.s3_verify, aws_access_key_id=options.s3_access_key_id, aws_secret_access_key=options.s3_secret_access_key,
        aws_session_token=options.s3_session_token, config=config,
    )
    return client, options.s3_endpoint_url or "AWS's S3 endpoint"


def _list_one(client, bucket: str, endpoint: str) -> None:
    from botocore import exceptions

    try:
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except exceptions.NoCredentialsError:
        raise ValueError(f"no AWS credentials for s3://{bucket}: {_FIX_CREDENTIALS}.") from None
    except (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError,
            exceptions.ConnectionClosedError) as error:
        raise StorageUnavailableError(
            f"cannot reach the S3 storage of s3://{bucket} at {endpoint} ({type(error).__name__}); check --s3_endpoint_url "
            f"and the network, or run again once the storage is up."
        ) from None
    except exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            raise ValueError(f"bucket s3://{bucket} does not exist at {endpoint}; check the path (or create the bucket).") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken") or status == 403:
            raise ValueError(f"the S3 storage refused the credentials for s3://{bucket} ({code}); {_FIX_CREDENTIALS}.") from None
        raise StorageUnavailableError(f"the S3 storage of s3://{bucket} failed a listing ({code or status}); run again later.") from None
