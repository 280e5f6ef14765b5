//! What an image is on this host, each keyed by a glob on the whole image reference (the first
//! match winning): the executable that plays its entrypoint (`--image PATTERN=EXECUTABLE`); its
//! PATH (`--image-path PATTERN=DIRS`), searched before the agent's for the container's command
//! (an image's `python` is the one that has its packages); and its files (`--image-file
//! PATTERN=CONTAINER_PATH=HOST_PATH`), the container's command, args and env values naming one
//! by its path in the image getting the host's copy instead.

use globset::GlobMatcher;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("--image {0:?}: expected PATTERN=EXECUTABLE")]
    Syntax(String),
    #[error("--image {arg:?}: bad pattern: {source}")]
    Pattern { arg: String, source: globset::Error },
    #[error("--image-path {0:?}: expected PATTERN=DIR[:DIR...]")]
    PathSyntax(String),
    #[error("--image-file {0:?}: expected PATTERN=CONTAINER_PATH=HOST_PATH, both paths absolute")]
    FileSyntax(String),
}

fn glob(pattern: &str, arg: &str) -> Result<GlobMatcher, ImageError> {
    // `*` must cross `/`: `*th-worker*` matches `ghcr.io/truthound/th-worker:latest`.
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| ImageError::Pattern {
            arg: arg.to_string(),
            source,
        })
}

#[derive(Debug, Clone)]
pub struct ImageMap {
    entries: Vec<(String, GlobMatcher, PathBuf)>,
    paths: Vec<(GlobMatcher, String)>,
    files: Vec<(GlobMatcher, String, String)>,
}

impl ImageMap {
    pub fn parse(args: &[String]) -> Result<Self, ImageError> {
        Self::parse_all(args, &[], &[])
    }

    /// `--image`, `--image-path` and `--image-file` arguments.
    pub fn parse_all(
        args: &[String],
        paths: &[String],
        files: &[String],
    ) -> Result<Self, ImageError> {
        let mut entries = Vec::with_capacity(args.len());
        for arg in args {
            let (pattern, exe) = arg
                .split_once('=')
                .filter(|(p, e)| !p.is_empty() && !e.is_empty())
                .ok_or_else(|| ImageError::Syntax(arg.clone()))?;
            entries.push((pattern.to_string(), glob(pattern, arg)?, PathBuf::from(exe)));
        }
        let mut image_paths = Vec::with_capacity(paths.len());
        for arg in paths {
            let (pattern, dirs) = arg
                .split_once('=')
                .filter(|(p, d)| !p.is_empty() && !d.is_empty())
                .ok_or_else(|| ImageError::PathSyntax(arg.clone()))?;
            image_paths.push((glob(pattern, arg)?, dirs.to_string()));
        }
        let mut image_files = Vec::with_capacity(files.len());
        for arg in files {
            let mut parts = arg.splitn(3, '=');
            let (Some(pattern), Some(inside), Some(host)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(ImageError::FileSyntax(arg.clone()));
            };
            if pattern.is_empty() || !inside.starts_with('/') || !host.starts_with('/') {
                return Err(ImageError::FileSyntax(arg.clone()));
            }
            image_files.push((glob(pattern, arg)?, inside.to_string(), host.to_string()));
        }
        Ok(ImageMap {
            entries,
            paths: image_paths,
            files: image_files,
        })
    }

    /// The image's PATH directories, if given.
    pub fn path(&self, image: &str) -> Option<&str> {
        self.paths
            .iter()
            .find(|(m, _)| m.is_match(image))
            .map(|(_, d)| d.as_str())
    }

    /// `s` with every path of the image's files replaced by the host's copy.
    pub fn map_files(&self, image: &str, s: &str) -> String {
        let mut out = s.to_string();
        for (m, inside, host) in &self.files {
            if m.is_match(image) {
                out = out.replace(inside.as_str(), host);
            }
        }
        out
    }

    /// The executable for `image`, if a pattern matches it.
    pub fn entrypoint(&self, image: &str) -> Option<&PathBuf> {
        self.entries
            .iter()
            .find(|(_, m, _)| m.is_match(image))
            .map(|(_, _, exe)| exe)
    }

    /// The patterns, for an error that says what was tried.
    pub fn patterns(&self) -> Vec<&str> {
        self.entries.iter().map(|(p, _, _)| p.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_pattern_wins() {
        let m = ImageMap::parse(&[
            "*th-worker-dask*=/bin/dask".into(),
            "*th-worker*=/bin/worker".into(),
        ])
        .unwrap();
        assert_eq!(
            m.entrypoint("ghcr.io/truthound/th-worker:latest"),
            Some(&PathBuf::from("/bin/worker"))
        );
        assert_eq!(
            m.entrypoint("ghcr.io/truthound/th-worker-dask:1"),
            Some(&PathBuf::from("/bin/dask"))
        );
        assert_eq!(m.entrypoint("busybox"), None);
    }

    #[test]
    fn an_images_path_and_files() {
        let m = ImageMap::parse_all(
            &[],
            &["*dask*=/venv/bin".into()],
            &["*dask*=/usr/local/bin/th-worker=/build/th-worker".into()],
        )
        .unwrap();
        assert_eq!(m.path("ghcr.io/x/th-worker-dask:1"), Some("/venv/bin"));
        assert_eq!(m.path("busybox"), None);
        assert_eq!(
            m.map_files(
                "th-worker-dask",
                r#"{"worker_bin":"/usr/local/bin/th-worker"}"#
            ),
            r#"{"worker_bin":"/build/th-worker"}"#
        );
        assert_eq!(
            m.map_files("busybox", "/usr/local/bin/th-worker"),
            "/usr/local/bin/th-worker"
        );
        let e = ImageMap::parse_all(&[], &[], &["*=relative=/x".into()]).unwrap_err();
        assert!(e.to_string().contains("relative"), "{e}");
        let e = ImageMap::parse_all(&[], &["nodirs".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("nodirs"), "{e}");
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = ImageMap::parse(&["no-equals".into()]).unwrap_err();
        assert!(e.to_string().contains("no-equals"), "{e}");
        let e = ImageMap::parse(&["a[=/x".into()]).unwrap_err();
        assert!(e.to_string().contains("a[=/x"), "{e}");
    }
}
