//! Splitting one physical CSV line into fields (RFC 4180 quoting, no embedded newlines).

use std::borrow::Cow;

/// Splits `line` at commas outside double quotes, unescaping `""` inside quoted fields.
/// Appends into `out` (cleared first) to reuse its allocation.
pub fn split_fields<'a>(line: &'a str, out: &mut Vec<Cow<'a, str>>) {
    out.clear();
    if !line.contains('"') {
        out.extend(line.split(',').map(Cow::Borrowed));
        return;
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        if i < bytes.len() && bytes[i] == b'"' {
            // Quoted field.
            let mut value = String::new();
            let mut j = i + 1;
            let mut start = j;
            loop {
                match line[j..].find('"') {
                    None => {
                        // Unterminated quote: take the rest as the value.
                        value.push_str(&line[start..]);
                        j = bytes.len();
                        break;
                    }
                    Some(k) => {
                        let q = j + k;
                        value.push_str(&line[start..q]);
                        if q + 1 < bytes.len() && bytes[q + 1] == b'"' {
                            value.push('"');
                            j = q + 2;
                            start = j;
                        } else {
                            j = q + 1;
                            break;
                        }
                    }
                }
            }
            // Anything between the closing quote and the next comma is kept verbatim.
            let next = line[j..].find(',').map(|k| j + k);
            let tail_end = next.unwrap_or(bytes.len());
            value.push_str(&line[j..tail_end]);
            out.push(Cow::Owned(value));
            match next {
                Some(c) => i = c + 1,
                None => return,
            }
        } else {
            let next = line[i..].find(',').map(|k| i + k);
            match next {
                Some(c) => {
                    out.push(Cow::Borrowed(&line[i..c]));
                    i = c + 1;
                }
                None => {
                    out.push(Cow::Borrowed(&line[i..]));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        let mut v = vec![];
        split_fields(s, &mut v);
        v.into_iter().map(|c| c.into_owned()).collect()
    }

    #[test]
    fn plain_fields() {
        assert_eq!(split("a,b,,c"), vec!["a", "b", "", "c"]);
        assert_eq!(split(""), vec![""]);
    }

    #[test]
    fn quoted_fields_with_commas_and_quotes() {
        assert_eq!(split(r#"1,"SMITH, JR","say ""hi""",x"#), vec!["1", "SMITH, JR", r#"say "hi""#, "x"]);
        assert_eq!(split(r#""a",b"#), vec!["a", "b"]);
        assert_eq!(split(r#"a,"""#), vec!["a", ""]);
    }
}
