//! `th-operator` as a Deployment starts it, against an API server it cannot reach: a clear error
//! and a non-zero exit, never a panic (a panic is a crash loop with nothing useful in the logs).

use std::process::Command;

#[test]
fn an_unreachable_api_server_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    // TLS, so that the client's crypto provider is chosen (with two compiled in, rustls
    // panics unless the binary picks one).
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\n  name: c\ncontexts:\n- context: {cluster: c, user: u, namespace: default}\n  name: x\ncurrent-context: x\nusers:\n- name: u\n  user: {token: abc}\n",
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_th-operator"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--progress-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_BACKTRACE", "0")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("th-operator runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("cannot list ProfileJobs"),
        "{stdout}{stderr}"
    );
}
