//! Which local executable plays an image's entrypoint: `--image PATTERN=EXECUTABLE`, the
//! pattern a glob on the whole image reference, the first match winning.

use globset::GlobMatcher;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("--image {0:?}: expected PATTERN=EXECUTABLE")]
    Syntax(String),
    #[error("--image {arg:?}: bad pattern: {source}")]
    Pattern { arg: String, source: globset::Error },
}

#[derive(Debug, Clone)]
pub struct ImageMap {
    entries: Vec<(String, GlobMatcher, PathBuf)>,
}

impl ImageMap {
    pub fn parse(args: &[String]) -> Result<Self, ImageError> {
        let mut entries = Vec::with_capacity(args.len());
        for arg in args {
            let (pattern, exe) = arg
                .split_once('=')
                .filter(|(p, e)| !p.is_empty() && !e.is_empty())
                .ok_or_else(|| ImageError::Syntax(arg.clone()))?;
            // `*` must cross `/`: `*th-worker*` matches `ghcr.io/truthound/th-worker:latest`.
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
                .map_err(|source| ImageError::Pattern {
                    arg: arg.clone(),
                    source,
                })?;
            entries.push((
                pattern.to_string(),
                glob.compile_matcher(),
                PathBuf::from(exe),
            ));
        }
        Ok(ImageMap { entries })
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
    fn bad_arguments_are_named() {
        let e = ImageMap::parse(&["no-equals".into()]).unwrap_err();
        assert!(e.to_string().contains("no-equals"), "{e}");
        let e = ImageMap::parse(&["a[=/x".into()]).unwrap_err();
        assert!(e.to_string().contains("a[=/x"), "{e}");
    }
}
