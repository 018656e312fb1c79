"""Weekly partner scorecards: one data document per partner and week, read from the store, and
renderers from it (CSV, JSON, XLSX, HTML). See docs/scorecards.md."""
