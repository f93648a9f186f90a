//! Kamailio as the PBX's registrar and proxy: a config from `tests/fixtures/kamailio/`, started
//! in the foreground on a loopback port with its log in the test's folder, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Kamailio {
    child: Option<Child>,
    log: PathBuf,
    pub port: u16,
}

impl Kamailio {
    /// Start Kamailio on `127.0.0.1:port` with these users (name, password); bindings may
    /// last `min_expires..=max_expires` seconds.
    pub fn start(dir: &Path, port: u16, users: &[(&str, &str)], min_expires: u32, max_expires: u32) -> Kamailio {
        let tmpl = std::fs::read_to_string(super::repo_root().join("tests/fixtures/kamailio/kamailio.cfg.tmpl"))
            .expect("kamailio template");
        let users_list = users;
        let users: String =
            users.iter().map(|(u, p)| format!("    if ($au == \"{u}\") {{ $var(pw) = \"{p}\"; }}\n")).collect();
        let cfg = tmpl
            .replace("@PORT@", &port.to_string())
            .replace("@MIN_EXPIRES@", &min_expires.to_string())
            .replace("@MAX_EXPIRES@", &max_expires.to_string())
            .replace("@USERS@", &users)
            .replace("@AGENT_PW@", users_pw(users_list, "agent"));
        let kdir = dir.join("kamailio");
        std::fs::create_dir_all(&kdir).expect("kamailio dir");
        let cfg_path = kdir.join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).expect("write kamailio.cfg");
        let log = kdir.join("kamailio.log");
        let out = std::fs::File::create(&log).expect("kamailio log");
        let err = out.try_clone().expect("clone");
        let child = Command::new(super::tool("kamailio"))
            .arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-Y"])
            .arg(&kdir)
            .arg("-P")
            .arg(kdir.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start kamailio: {e}"));
        let k = Kamailio { child: Some(child), log, port };
        let up = super::wait_until(Duration::from_secs(10), || {
            super::wait_udp_bound(port, Duration::from_millis(100)).then_some(())
        });
        assert!(up.is_some(), "Kamailio did not listen on {port}:\n{}", k.log_text());
        k
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The script's log lines (`xlog`) that contain `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        self.log_text().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            super::stop_child(&mut c, "TERM", Duration::from_secs(3));
        }
    }
}

fn users_pw<'a>(users: &[(&str, &'a str)], name: &str) -> &'a str {
    users.iter().find(|(u, _)| *u == name).map(|(_, p)| *p).unwrap_or("")
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}
