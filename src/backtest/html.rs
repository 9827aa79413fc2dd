//! The backtest report as one HTML page (placeholder until the html module is merged).

/// One self-contained HTML page from the JSON report.
pub fn render(report: &serde_json::Value) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>nurtured backtest</title><pre>{}</pre>",
        report
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
    )
}
