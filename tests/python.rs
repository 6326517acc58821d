//! The Python package (`python/`): installed into the test virtualenv with `pip install ./python`
//! (maturin builds the extension module), then its pytest suite, which checks `keytrail.read` and
//! `keytrail.spark` (PySpark in local mode, Java 17) against this build's `keytrail` binary.

mod common;

use std::path::Path;
use std::process::Command;

use common::{python_venv, start_server};

#[test]
fn the_python_package_installs_and_passes_its_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = python_venv("tests/interop/requirements.txt", "interop-venv");
    let bin = Path::new(&python).parent().expect("the venv's bin directory");
    let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("a PATH");
    // The extension builds in a target directory of its own: the one this test runs from is
    // locked by the cargo that runs it. A debug build, to keep CI's build time down.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("python");
    let install = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args([
            "--no-build-isolation",
            "--no-deps",
            "--force-reinstall",
            "./python",
        ])
        .current_dir(root)
        .env("PATH", &path)
        .env("CARGO_TARGET_DIR", &target)
        .env("MATURIN_PEP517_ARGS", "--profile dev")
        .output()
        .expect("pip runs");
    assert!(
        install.status.success(),
        "pip install ./python failed:\n{}\n{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    // `keytrail.read("s3://...")` against the local S3 server (the Invictus files in the
    // `trail-logs` bucket).
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));
    let mut pytest = Command::new(&python);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            pytest.env_remove(name);
        }
    }
    let tests = pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests"])
        .current_dir(root)
        .env("PATH", &path)
        .env("KEYTRAIL_BIN", env!("CARGO_BIN_EXE_keytrail"))
        .env("KEYTRAIL_TEST_S3_OBJECTS", server.objects.to_string())
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("pytest runs");
    let report = String::from_utf8_lossy(&tests.stdout);
    println!("{report}");
    assert!(
        tests.status.success(),
        "the Python package's tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&tests.stderr)
    );
}
