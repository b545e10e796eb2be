//! The README's quick start, exactly as written: a new project outside the workspace with
//! the README's `[dependencies]` block and `src/main.rs`, next to a checkout of this
//! repository named `saga` (as the README says to clone it), built and run; its output must
//! be what the README shows.
//!
//! It compiles a project of its own (a couple of minutes on two cores), so it runs when
//! `SAGA_TEST_QUICKSTART=1`, which CI sets; otherwise it says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The blocks of the README's "Quick start": the first `toml`, `rust` and `text` ones.
fn quick_start() -> (String, String, String) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let block = |info: &str| -> String {
        let open = format!("```{info}");
        let at = section
            .find(&open)
            .unwrap_or_else(|| panic!("no {open} block in the quick start"));
        let body = &section[at..];
        let body = &body[body.find('\n').expect("a line break") + 1..];
        body[..body.find("```").expect("a closing fence")].to_owned()
    };
    (block("toml"), block("rust"), block("text"))
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saga-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn the_readme_quick_start_builds_and_runs_as_written() {
    if std::env::var("SAGA_TEST_QUICKSTART").as_deref() != Ok("1") {
        assert!(
            std::env::var_os("CI").is_none(),
            "SAGA_TEST_QUICKSTART=1 must be set in CI"
        );
        eprintln!("note: set SAGA_TEST_QUICKSTART=1 to build the README's quick start");
        return;
    }
    let (dependencies, main, expected) = quick_start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = temp_dir();
    // The README's layout: the project next to a checkout called `saga`.
    std::os::unix::fs::symlink(root, dir.join("saga")).expect("link the checkout");
    let project = dir.join("quickstart");
    std::fs::create_dir_all(project.join("src")).expect("project dir");
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"quickstart\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n\n{dependencies}"
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(project.join("src/main.rs"), main).expect("main.rs");
    // The versions this repository is tested with (cargo drops what the project does not use).
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).expect("Cargo.lock");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("quickstart");
    let run = Command::new(env!("CARGO"))
        .args(["run", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the quick start failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    assert_eq!(stdout, expected, "the output differs from the README's");
    assert!(
        project.join("checkout.db").exists(),
        "the saga was checkpointed to its file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
