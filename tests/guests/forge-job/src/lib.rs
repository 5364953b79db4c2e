//! A hostile author's text: logs, prints and fails (or retries, or panics)
//! with words full of terminal escapes, carriage returns, newlines followed
//! by forged report and log lines, and a bidi override; or, with
//! `{"mode": "flood"}`, writes its whole output budget as one-byte log
//! lines.

/// Clears the screen, recolours, returns the cursor, sends a C1 control
/// sequence introducer, reverses the text after it, then forges a line of
/// `runtime dispatch`'s report and one of a worker's log. Every forged line
/// holds `FORGED`.
const HOSTILE: &str = "clear\x1b[2J\x1b[31mred\rFORGED over\u{9b}31m \u{202e}exe.txt\nFORGED forge:1: done after 1 attempt\n2026-01-01T00:00:00.000000Z  INFO runtime::cli::worker: FORGED job done job=forge:1 outcome=\"done\"";

fn handle(job: guest_sdk::Job) -> guest_sdk::Result {
    match job.payload["mode"].as_str().unwrap_or("fail") {
        "flood" => loop {
            guest_sdk::info!("x");
        },
        "panic" => panic!("{HOSTILE}"),
        mode => {
            guest_sdk::info!("{HOSTILE}");
            guest_sdk::warn!("{HOSTILE}");
            println!("{HOSTILE}");
            eprintln!("{HOSTILE}");
            if mode == "retry" {
                Err(guest_sdk::Error::retry(HOSTILE))
            } else {
                Err(guest_sdk::fail(HOSTILE))
            }
        }
    }
}
guest_sdk::export_handler!(handle);
