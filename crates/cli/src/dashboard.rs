//! `weft dashboard`: prints where weftd's console is and opens a browser on it when there is one.

use anyhow::{bail, Context};
use std::time::Duration;

/// The console's port when weftd was not told another (`weftd --console-address`, Kiali's 20001).
pub const DEFAULT_CONSOLE_PORT: u16 = 20001;

/// The console's address: `given`, else weftd's host (from its debug address) on
/// [`DEFAULT_CONSOLE_PORT`].
pub fn console_address(weftd: &str, given: Option<&str>) -> String {
    if let Some(a) = given {
        return a.to_string();
    }
    let host = match weftd.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => weftd,
    };
    format!("{host}:{DEFAULT_CONSOLE_PORT}")
}

/// Checks that a console answers at `addr`, prints its URL, and opens `browser` on it unless told not
/// to. A missing or failing browser is not an error: the URL is printed either way.
pub async fn run(addr: &str, browser: Option<&str>) -> anyhow::Result<()> {
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        crate::http::get(addr, "/api/status"),
    )
    .await;
    match answer {
        Ok(Ok((200, _))) => {}
        Ok(Ok((status, _))) => {
            bail!("http://{addr}/api/status answered {status}: is this weftd's console?")
        }
        Ok(Err(e)) => {
            return Err(e).with_context(|| {
                format!(
                    "no console at {addr} (weftd serves it on --console-address; pass --address)"
                )
            })
        }
        Err(_) => bail!("no answer from the console at {addr} within 5s"),
    }
    let url = format!("http://{addr}/");
    println!("{url}");
    if let Some(browser) = browser {
        // Started and left to run: a browser that cannot start (no display) fails on its own.
        match std::process::Command::new(browser)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(_) => eprintln!("opening it with {browser}"),
            Err(_) => eprintln!("no browser ({browser} not found): open the address above"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_beside_weftd_unless_given() {
        assert_eq!(console_address("127.0.0.1:15014", None), "127.0.0.1:20001");
        assert_eq!(console_address("127.3.0.1:15014", None), "127.3.0.1:20001");
        assert_eq!(console_address("weftd", None), "weftd:20001");
        assert_eq!(
            console_address("127.0.0.1:15014", Some("10.0.0.1:8080")),
            "10.0.0.1:8080"
        );
    }
}
