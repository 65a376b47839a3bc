//! The coordinator's side of the worker processes: spawn them, hand each a share of the
//! clients, and gather their reports.

use std::{collections::HashMap, process::Stdio, time::Duration};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
    time::timeout,
};

use crate::worker::{Client, Cmd, Proto, Reply, Report, histogram};

/// Source addresses clients connect from (each has its own ephemeral port range).
const SOURCES: usize = 8;

pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    replies: mpsc::UnboundedReceiver<(usize, Reply)>,
    /// Broadcast mode: `Done` messages that arrived while waiting for something else.
    done: HashMap<u64, Vec<u64>>,
    /// Workers that hold at least one client.
    active: Vec<bool>,
}

/// What the workers saw, merged.
pub struct Merged {
    pub frames: u64,
    pub marked: u64,
    pub closed: u64,
    pub hist: Histogram<u64>,
}

impl Workers {
    /// Spawns `n` worker processes (this same binary, `worker` subcommand).
    pub fn spawn(n: usize) -> Result<Workers> {
        let exe = std::env::current_exe()?;
        let (tx, replies) = mpsc::unbounded_channel();
        let (mut children, mut stdins) = (Vec::new(), Vec::new());
        for i in 0..n {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("spawning a worker")?;
            stdins.push(child.stdin.take().context("stdin")?);
            let stdout = child.stdout.take().context("stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Reply>(&line) {
                        Ok(r) => {
                            let _ = tx.send((i, r));
                        }
                        Err(e) => eprintln!("worker {i}: bad reply {e}: {line}"),
                    }
                }
            });
            children.push(child);
        }
        Ok(Workers {
            children,
            stdins,
            replies,
            done: HashMap::new(),
            active: vec![false; n],
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    async fn send(&mut self, i: usize, cmd: &Cmd) -> Result<()> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        self.stdins[i].write_all(&line).await?;
        self.stdins[i].flush().await?;
        Ok(())
    }

    /// Waits for one non-`Done` reply from each of `from`.
    async fn gather(&mut self, from: &[usize], wait: Duration) -> Result<HashMap<usize, Reply>> {
        let mut got = HashMap::new();
        while got.len() < from.len() {
            let (i, r) = timeout(wait, self.replies.recv())
                .await
                .context("a worker did not answer in time")?
                .context("a worker exited")?;
            match r {
                Reply::Done { seq, last_ns } => self.done.entry(seq).or_default().push(last_ns),
                r => {
                    got.insert(i, r);
                }
            }
        }
        Ok(got)
    }

    /// Opens `clients[k]` on the server `servers[k % servers.len()]`'s worker share:
    /// workers are split evenly over the servers, clients over the workers of their server.
    /// Returns (opened, failed, first error).
    pub async fn connect(
        &mut self,
        proto: Proto,
        servers: &[String],
        clients: Vec<(usize, Client)>,
        report_done: bool,
    ) -> Result<(usize, usize, Option<String>)> {
        let n = self.stdins.len();
        let per_server = (n / servers.len()).max(1);
        let mut shares: Vec<Vec<Client>> = vec![Vec::new(); n];
        let mut next = vec![0usize; servers.len()];
        for (server, c) in clients {
            let w = server * per_server + next[server] % per_server;
            next[server] += 1;
            shares[w].push(c);
        }
        let mut asked = Vec::new();
        for (i, share) in shares.into_iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            self.active[i] = true;
            let server = servers[(i / per_server).min(servers.len() - 1)].clone();
            let sources = (0..SOURCES)
                .map(|s| format!("127.0.0.{}", 2 + (i * SOURCES + s) % 250))
                .collect();
            let cmd = Cmd::Connect {
                proto,
                server,
                clients: share,
                sources,
                parallel: 64,
                report_done,
            };
            self.send(i, &cmd).await?;
            asked.push(i);
        }
        let mut total = (0, 0, None);
        // Each client has 30 s to open its session (the worker's handshake timeout).
        for (_, r) in self.gather(&asked, Duration::from_secs(120)).await? {
            let Reply::Connected {
                ok,
                failed,
                first_error,
            } = r
            else {
                bail!("unexpected reply to Connect");
            };
            total.0 += ok;
            total.1 += failed;
            if total.2.is_none() {
                total.2 = first_error;
            }
        }
        Ok(total)
    }

    fn active(&self) -> Vec<usize> {
        (0..self.stdins.len()).filter(|i| self.active[*i]).collect()
    }

    /// Zeroes every worker's counters.
    pub async fn reset(&mut self) -> Result<()> {
        let active = self.active();
        for &i in &active {
            self.send(i, &Cmd::Reset).await?;
        }
        self.gather(&active, Duration::from_secs(30)).await?;
        self.done.clear();
        Ok(())
    }

    /// Each worker's report, by worker index.
    pub async fn reports(&mut self) -> Result<HashMap<usize, Report>> {
        let active = self.active();
        for &i in &active {
            self.send(i, &Cmd::Report).await?;
        }
        let mut out = HashMap::new();
        for (i, r) in self.gather(&active, Duration::from_secs(30)).await? {
            let Reply::Report(r) = r else {
                bail!("unexpected reply to Report")
            };
            out.insert(i, r);
        }
        Ok(out)
    }

    /// The reports of the workers `pick` selects, merged.
    pub async fn merged(&mut self, pick: impl Fn(usize) -> bool) -> Result<Merged> {
        let mut m = Merged {
            frames: 0,
            marked: 0,
            closed: 0,
            hist: histogram(),
        };
        for (i, r) in self.reports().await? {
            if !pick(i) {
                continue;
            }
            m.frames += r.frames;
            m.marked += r.marked;
            m.closed += r.closed;
            m.hist.add(r.histogram()?)?;
        }
        Ok(m)
    }

    /// Workers that connected to server `s` of `servers` (see `connect`).
    pub fn of_server(&self, s: usize, servers: usize) -> impl Fn(usize) -> bool + use<> {
        let per_server = (self.stdins.len() / servers).max(1);
        move |i| (i / per_server).min(servers - 1) == s
    }

    /// Waits until every active worker says all its clients have message `seq`; returns the
    /// latest arrival (ns, CLOCK_MONOTONIC).
    pub async fn wait_done(&mut self, seq: u64, wait: Duration) -> Result<u64> {
        let need = self.active().len();
        loop {
            if let Some(v) = self.done.get(&seq)
                && v.len() >= need
            {
                let last = v.iter().copied().max().unwrap_or(0);
                self.done.remove(&seq);
                return Ok(last);
            }
            let (_, r) = timeout(wait, self.replies.recv())
                .await
                .with_context(|| format!("message {seq} did not reach every client in {wait:?}"))?
                .context("a worker exited")?;
            if let Reply::Done { seq, last_ns } = r {
                self.done.entry(seq).or_default().push(last_ns);
            }
        }
    }

    /// Closes every client and ends the workers.
    pub async fn close(mut self) {
        for i in 0..self.stdins.len() {
            let _ = self.send(i, &Cmd::Close).await;
        }
        for c in &mut self.children {
            let _ = timeout(Duration::from_secs(10), c.wait()).await;
        }
    }
}
