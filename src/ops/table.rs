//! Aligned plain-text tables, as `ymesh status` and `ymesh rooms` print them.

/// A JSON value as a table cell: strings bare, null as "-".
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An aligned text table with `header`.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let out = table(
            &["A", "LONG HEADER", "END"],
            vec![
                vec!["wide cell".into(), "x".into(), "tail".into()],
                vec![
                    cell(&serde_json::Value::Null),
                    cell(&"s".into()),
                    cell(&3.into()),
                ],
            ],
        );
        assert_eq!(
            out,
            "A          LONG HEADER  END\nwide cell  x            tail\n-          s            3\n"
        );
    }
}
