//! `http(s)://` datasets: a real HTTP server on 127.0.0.1 (std only) that answers HEAD and
//! ranged GETs the way static file servers and CDNs do, serving a Parquet and a CSV file.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use truthound_e2e::*;

/// Serves `files` (name → bytes) until the test process ends; returns the base URL.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let files = std::sync::Arc::new(files);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let files = files.clone();
            std::thread::spawn(move || answer(conn, &files));
        }
    });
    base
}

/// Answers the requests of one keep-alive connection.
fn answer(conn: std::net::TcpStream, files: &[(&'static str, Vec<u8>)]) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            break;
        }
        let mut range: Option<(u64, Option<u64>)> = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                let (a, b) = r.trim().split_once('-').unwrap();
                range = Some((a.parse().unwrap(), b.parse().ok()));
            }
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let file = files
            .iter()
            .find(|(n, _)| path.trim_start_matches('/') == *n);
        let Some((_, body)) = file else {
            let _ = write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let len = body.len() as u64;
        let (status, lo, hi) = match range {
            Some((a, b)) => ("206 Partial Content", a, b.unwrap_or(len - 1).min(len - 1)),
            None => ("200 OK", 0, len - 1),
        };
        let slice = &body[lo as usize..=hi as usize];
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nLast-Modified: Mon, 02 Jan 2006 15:04:05 GMT\r\nETag: \"v1\"\r\n{}\r\n",
            if method == "HEAD" {
                len
            } else {
                slice.len() as u64
            },
            if range.is_some() {
                format!("Content-Range: bytes {lo}-{hi}/{len}\r\n")
            } else {
                String::new()
            },
        );
        if method != "HEAD" {
            let _ = conn.write_all(slice);
        }
    }
}

#[test]
fn profiles_parquet_and_csv_over_http() {
    let batch = table(0..1500);
    let parquet = parquet_bytes(&batch, 400);
    let mut csv = Vec::new();
    arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut csv)
        .write(&batch)
        .unwrap();
    let base = serve(vec![("d/data.parquet", parquet), ("d/data.csv", csv)]);
    let mut profiles = Vec::new();
    for f in ["data.parquet", "data.csv"] {
        let out = run(
            "th",
            &[
                "profile",
                &format!("{base}/d/{f}"),
                "--json",
                "--partitions",
                "3",
            ],
        );
        assert!(out.status.success(), "{f}: {}", stderr(&out));
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(p["row_count"], 1500, "{f}");
        profiles.push(p);
    }
    assert_same_exact(&profiles[1], &profiles[0]);
    let out = run("th", &["profile", &format!("{base}/d/missing.parquet")]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing.parquet: not found"),
        "{}",
        stderr(&out)
    );
}
