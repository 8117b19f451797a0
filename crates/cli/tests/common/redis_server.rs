//! A real `redis-server` on a free loopback port, started by a test or benchmark and
//! killed when dropped. Installed by `scripts/fetch-models.sh`; a missing binary fails
//! loudly instead of skipping.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` without persistence.
pub struct RedisServer {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    /// The password it requires (`requirepass`), if any.
    password: Option<String>,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        Self::start_on(port)
    }

    /// Starts one on `port` (again, after [`Self::kill`]), answering PING before it returns.
    pub fn start_on(port: u16) -> Self {
        Self::start_with_password(port, None)
    }

    /// Starts one on `port` that requires `password` (`requirepass`) when given.
    pub fn start_with_password(port: u16, password: Option<&str>) -> Self {
        let mut command = Command::new("redis-server");
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis tests need it; \
                     scripts/fetch-models.sh installs it (apt-get install redis-server)"
                )
            });
        let server = Self {
            child,
            port,
            password: password.map(str::to_owned),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.try_command(&["PING"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `redis://127.0.0.1:PORT/0`, without the password (replicas read it from a file).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The URL with the password, for the test's own connections.
    fn admin_url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => self.url(),
        }
    }

    /// Kills it with SIGKILL (its data is gone: it never saves).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends it a signal (`STOP` to stall it, `CONT` to resume).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn try_command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.admin_url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut connection)
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let client = redis::Client::open(self.admin_url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("GET").arg(key).query(&mut connection).unwrap()
    }

    /// Keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.admin_url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut connection)
            .unwrap();
        keys.sort();
        keys
    }

    /// Sets `key` to raw `value`, keeping no TTL.
    pub fn set(&self, key: &str, value: &[u8]) {
        let client = redis::Client::open(self.admin_url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut connection)
            .unwrap();
    }

    /// The remaining lifetime of `key` in milliseconds (-1: none, -2: no key).
    pub fn pttl(&self, key: &str) -> i64 {
        let client = redis::Client::open(self.admin_url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("PTTL").arg(key).query(&mut connection).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
