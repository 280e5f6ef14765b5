//! Kubernetes' `$(VAR)` expansion of env values, commands and args, byte for byte as the
//! kubelet's `third_party/forked/golang/expansion`: `$(NAME)` becomes the variable's value when
//! it is defined and stays as written when not; `$$` is an escaped `$`; anything else is kept.

/// Expands `$(NAME)` references in `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(close) => {
                        // Between `(` and `)`: ASCII delimiters, so the slice is valid UTF-8.
                        let name = String::from_utf8_lossy(&rest[1..close]);
                        match lookup(&name) {
                            Some(v) => out.extend_from_slice(v.as_bytes()),
                            None => out.extend_from_slice(format!("$({name})").as_bytes()),
                        }
                        close + 1
                    }
                    // No closing parenthesis: the `$(` stays, the rest is copied on.
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    // Only whole UTF-8 sequences were copied or inserted.
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn like_the_kubelet() {
        // Cases from Kubernetes' expansion_test.go.
        for (input, want) in [
            ("$(A)", "alpha"),
            ("x$(A)y", "xalphay"),
            ("$(A)$(A)", "alphaalpha"),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("$(EMPTY)", ""),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$alpha"),
            ("$$$$(A)", "$$(A)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("$", "$"),
            ("a$", "a$"),
            ("$()", "$()"),
            ("héllo $(A) wörld", "héllo alpha wörld"),
            ("echo $JOB_COMPLETION_INDEX", "echo $JOB_COMPLETION_INDEX"),
        ] {
            assert_eq!(expand(input, vars), want, "expanding {input:?}");
        }
    }
}
