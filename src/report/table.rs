//! Plain-text tables with aligned columns for the reports' text output: text columns
//! to the left, numbers to the right, two spaces between columns.

/// How a column lines up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table: headers, then rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells stay empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, each line indented by `indent` spaces and ending in a newline.
    pub fn render(&self, indent: usize) -> String {
        let width = |i: usize, head: &str| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([head.chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| width(i, h))
            .collect();
        let line = |cells: Vec<&str>| {
            let mut out = " ".repeat(indent);
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).copied().unwrap_or("");
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = w.saturating_sub(cell.chars().count());
                match align {
                    Align::Left => {
                        out.push_str(cell);
                        out.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        out.push_str(&" ".repeat(pad));
                        out.push_str(cell);
                    }
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut out = line(self.columns.iter().map(|(h, _)| h.as_str()).collect());
        for r in &self.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_text_left_and_numbers_right() {
        let mut t = Table::new(&[("stage", Align::Left), ("leads", Align::Right)]);
        t.row(vec!["subscriber".into(), "7".into()]);
        t.row(vec!["mql".into(), "120".into()]);
        assert_eq!(
            t.render(2),
            "  stage       leads\n  subscriber      7\n  mql           120\n"
        );
    }

    #[test]
    fn short_rows_and_wide_cells() {
        let mut t = Table::new(&[("a", Align::Left), ("b", Align::Right), ("c", Align::Left)]);
        t.row(vec!["über".into()]);
        t.row(vec!["x".into(), "1000".into(), "y".into()]);
        assert_eq!(t.render(0), "a        b  c\nüber\nx     1000  y\n");
    }
}
