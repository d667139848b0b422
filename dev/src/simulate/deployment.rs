//! The deployment while it runs: its pods, the fake's live clock, and the rescales of the
//! schedule. Each round checks the pods, starts the live traffic once they are connected,
//! finishes a rescale that ended or starts one that is due, and tells whether everything
//! was committed.

use super::cost::{Usage, Window};
use super::fleet::{self, Launcher, Pod, PodStatus};
use super::report::{self, Ended, PodSummary, Progress};
use super::{schedule, verify, SimulateArgs, API_TOKEN};
use crate::fake_discord::Fake;
use crate::probe::http_get;
use anyhow::{bail, Context as _};
use gateway_actors::partition::Strategy;
use gateway_actors::rescale::ownership::Layout;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Deployment<'a> {
    args: &'a SimulateArgs,
    exe: PathBuf,
    fake: Arc<Fake>,
    launcher: Launcher,
    /// Live traffic: one clock, each event sent once (implied by a rescale schedule).
    live: bool,
    steps: Vec<schedule::Step>,
    pub(super) pods: Vec<Pod>,
    /// The layout the pods follow now (a rescale's commit changes it).
    pub(super) strategy: Strategy,
    shards: Option<u32>,
    current_pods: u32,
    /// The next step of the schedule to start.
    next_step: usize,
    /// The `guild-gateway rescale` under way, and its log.
    rescaling: Option<(Child, PathBuf)>,
    /// The pods' CPU time and database sizes, sampled each round, to tell what a rescale costs.
    usage: Usage,
    /// The usage since the rescale under way started.
    window: Option<Window>,
    rescales: Vec<schedule::Summary>,
    started: Instant,
}

impl<'a> Deployment<'a> {
    /// Starts the first `--pods` pods.
    pub(super) fn start(
        args: &'a SimulateArgs,
        exe: PathBuf,
        fake: Arc<Fake>,
        steps: Vec<schedule::Step>,
        strategy: Strategy,
        live: bool,
    ) -> anyhow::Result<Deployment<'a>> {
        let launcher = launcher(args, &exe, &fake, &steps);
        let mut pods = Vec::new();
        for ordinal in 0..args.pods {
            pods.push(launcher.start(ordinal, args.pods, strategy, args.shards)?);
        }
        Ok(Deployment {
            args,
            exe,
            fake,
            launcher,
            live,
            steps,
            pods,
            strategy,
            shards: args.shards,
            current_pods: args.pods,
            next_step: 0,
            rescaling: None,
            usage: Usage::default(),
            window: None,
            rescales: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Seconds since the pods were started.
    pub(super) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Rounds until every pod committed everything it was sent (and, live, the stream and
    /// every rescale are over); each pod's last status.
    pub(super) async fn run_until_finished(&mut self) -> anyhow::Result<Vec<PodStatus>> {
        let deadline = self.started + Duration::from_secs(self.args.timeout_secs);
        let mut progress = Progress::new(self.started);
        loop {
            self.check_alive()?;
            let statuses = self.poll().await;
            self.start_live_traffic_once_connected(&statuses).await?;
            self.finish_rescale_if_ended().await?;
            self.start_rescale_if_due().await?;
            let finished = self.finished(&statuses);
            progress.print(&self.pods, &statuses, finished);
            if finished {
                return Ok(statuses
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect());
            }
            if Instant::now() > deadline {
                bail!(
                    "the pods did not finish within {} s",
                    self.args.timeout_secs
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A pod that exits on its own fails the run, naming it.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for pod in self.pods.iter_mut().filter(|p| !p.stopped) {
            if let Some(status) = pod.child.try_wait().context("checking a pod")? {
                bail!(
                    "pod {} (pid {}) died with {status} before committing everything it was sent; see {}",
                    pod.ordinal,
                    pod.child.id(),
                    pod.log.display()
                );
            }
        }
        Ok(())
    }

    /// Every pod's `/status` (None: not answering), and a sample of their usage.
    async fn poll(&mut self) -> Vec<Option<PodStatus>> {
        let statuses =
            futures_util::future::join_all(self.pods.iter().map(|p| fleet::pod_status(p.http)))
                .await;
        self.usage.sample(&self.pods);
        if let Some(w) = &mut self.window {
            w.disk_peak = w.disk_peak.max(self.usage.disk);
        }
        statuses
    }

    /// Live traffic starts once every first pod has all its sessions (and its relay clients).
    async fn start_live_traffic_once_connected(
        &self,
        statuses: &[Option<PodStatus>],
    ) -> anyhow::Result<()> {
        if self.live && !self.fake.clock_view().running && fleet::all_connected(statuses) {
            for pod in &self.pods {
                fleet::wait_relay_clients(pod, self.args.relay_clients).await?;
            }
            eprintln!("every pod is connected: the live stream starts");
            let _ = self.fake.clock_start();
        }
        Ok(())
    }

    /// Reports a rescale that ended, checks coverage, and stops the pods it emptied.
    async fn finish_rescale_if_ended(&mut self) -> anyhow::Result<()> {
        let ended = match &mut self.rescaling {
            Some((child, _)) => child.try_wait().context("checking rescale")?.is_some(),
            None => false,
        };
        let Some((child, log)) = self.rescaling.take_if(|_| ended) else {
            return Ok(());
        };
        let summary = schedule::finish(child, &log)?;
        let cost = self.window.take().map(|w| w.cost(&self.usage));
        report::print_rescale(self.rescales.len(), &summary, cost, self.args.json);
        schedule::coverage(&self.exe, &self.launcher.pod_urls)?;
        // Pods past the new count own nothing now: stopped, as the StatefulSet would.
        for pod in self
            .pods
            .iter_mut()
            .filter(|p| p.ordinal >= summary.to.pods && !p.stopped)
        {
            fleet::release_relay_clients(pod, self.args.json).await;
            fleet::stop(pod, false)?;
            pod.stopped = true;
        }
        self.current_pods = summary.to.pods;
        self.strategy = summary.to.strategy.parse().unwrap_or(self.strategy);
        self.shards = Some(summary.to.shards);
        self.rescales.push(summary);
        Ok(())
    }

    /// Starts the schedule's next rescale once the stream reached its point (steps are evenly
    /// spaced over the stream).
    async fn start_rescale_if_due(&mut self) -> anyhow::Result<()> {
        let clock = self.fake.clock_view();
        if self.rescaling.is_some() || self.next_step >= self.steps.len() || !clock.running {
            return Ok(());
        }
        let due = clock.total * (self.next_step as u64 + 1) / (self.steps.len() as u64 + 1);
        if clock.position < due {
            return Ok(());
        }
        let step = self.steps[self.next_step].clone();
        self.start_standby_pods(step.pods).await?;
        eprintln!(
            "rescale {}: {} -> {} pods at event {} of {}",
            self.next_step + 1,
            self.current_pods,
            step.pods,
            clock.position,
            clock.total
        );
        let log = self
            .args
            .data_dir
            .join(format!("rescale-{}.log", self.next_step + 1));
        let child = schedule::start(
            &self.exe,
            &step,
            &self.launcher.pod_urls,
            API_TOKEN,
            self.args.margin_ms,
            &log,
        )?;
        self.rescaling = Some((child, log));
        self.window = Some(Window::open(&self.usage));
        self.next_step += 1;
        Ok(())
    }

    /// A larger count: its standby pods first (they own nothing yet).
    async fn start_standby_pods(&mut self, to: u32) -> anyhow::Result<()> {
        let (current, strategy, shards) = (self.current_pods, self.strategy, self.shards);
        for ordinal in current..to {
            match self.pods.iter_mut().find(|p| p.ordinal == ordinal) {
                Some(pod) if !pod.stopped => {}
                Some(pod) => *pod = self.launcher.start(ordinal, current, strategy, shards)?,
                None => self
                    .pods
                    .push(self.launcher.start(ordinal, current, strategy, shards)?),
            }
            fleet::wait_answering(&self.pods[self.pods.len() - 1]).await?;
        }
        // Their relay clients start with them, before they own anything.
        for pod in self.pods.iter().filter(|p| !p.stopped) {
            fleet::wait_relay_clients(pod, self.args.relay_clients).await?;
        }
        Ok(())
    }

    /// Every session of every pod was sent everything, and the pod submitted it all and has
    /// nothing in flight (and, live, the stream and every rescale are over).
    fn finished(&self, statuses: &[Option<PodStatus>]) -> bool {
        let sessions = self.fake.session_views();
        self.rescaling.is_none()
            && self.next_step == self.steps.len()
            && self.fake.timeline_ended()
            && self.pods.iter().zip(statuses).all(|(pod, status)| {
                if pod.stopped {
                    return true;
                }
                let Some(status) = status else { return false };
                status.sessions.len() == status.pod_shards.len()
                    && status.in_flight == 0
                    && status.sessions.iter().all(|(id, submitted)| {
                        sessions.iter().any(|s| {
                            Some(&s.session_id) == id.as_ref()
                                && s.done
                                && *submitted == s.last_seq_sent
                        })
                    })
            })
    }

    /// Scrapes every running pod, then stops it with SIGTERM (they drain and exit 0); a line
    /// of the summary per pod.
    pub(super) async fn stop_and_summarize(
        &mut self,
        statuses: &[PodStatus],
        elapsed: f64,
    ) -> anyhow::Result<Vec<PodSummary>> {
        let mut metrics = Vec::new();
        let mut cpu = Vec::new();
        for pod in &self.pods {
            if pod.stopped {
                metrics.push(String::new());
                cpu.push(0.0);
                continue;
            }
            metrics.push(
                http_get(pod.http, "/metrics")
                    .await
                    .map(|(_, body)| body)
                    .unwrap_or_default(),
            );
            cpu.push(fleet::cpu_seconds(pod.child.id()));
        }
        for (pod, status) in self
            .pods
            .iter_mut()
            .zip(statuses)
            .filter(|(p, _)| !p.stopped)
        {
            // A pod that dropped or rolled back events says so in its exit status too; the
            // summary reports those.
            let lost_events = status.events_shed + status.events_failed > 0;
            fleet::release_relay_clients(pod, self.args.json).await;
            fleet::stop(pod, lost_events)?;
        }
        self.pods
            .iter()
            .zip(statuses)
            .zip(&metrics)
            .zip(&cpu)
            .map(|(((pod, status), metrics), &cpu_seconds)| {
                let ended = Ended {
                    pod,
                    status,
                    metrics,
                    cpu_seconds,
                };
                report::summarize(&ended, elapsed)
            })
            .collect()
    }

    /// Nothing lost: the same stream replayed into one pod, row for row, against the pods'
    /// databases in the final layout. False (after printing the differences) if they differ.
    pub(super) fn matches_one_pod_replay(&self, events: &Path) -> anyhow::Result<bool> {
        let reference = self.args.data_dir.join("reference.sqlite3");
        verify::replay_reference(&self.exe, events, &reference)?;
        let layout = self.final_layout();
        let dbs: Vec<&Path> = self.pods.iter().map(|p| p.database.as_path()).collect();
        let problems = verify::differences(&reference, &dbs, layout)?;
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("error: the pods' rows differ from the one-pod replay of the same stream");
            return Ok(false);
        }
        eprintln!(
            "after {} rescales the pods hold exactly the one-pod replay's rows, each guild on its owner ({layout})",
            self.rescales.len()
        );
        Ok(true)
    }

    fn final_layout(&self) -> Layout {
        let (pods, strategy) = (self.current_pods, self.strategy);
        let last = self.rescales.last().map(|r| r.to.clone());
        Layout {
            pods,
            strategy,
            shards: last.map_or_else(
                || {
                    self.shards.unwrap_or_else(|| {
                        gateway_actors::partition::default_shards(strategy, pods)
                    })
                },
                |l| l.shards,
            ),
        }
    }
}

/// Pod k serves HTTP (and the data API) on base + k, which POD_URL_TEMPLATE says.
fn launcher(args: &SimulateArgs, exe: &Path, fake: &Fake, steps: &[schedule::Step]) -> Launcher {
    let most_pods = steps.iter().map(|s| s.pods).fold(args.pods, u32::max);
    let base_port = crate::testing::free_port_block(most_pods as u16);
    let relay_base_port =
        (args.relay_clients > 0).then(|| crate::testing::free_port_block(most_pods as u16));
    Launcher {
        exe: exe.to_owned(),
        data_dir: args.data_dir.clone(),
        base_port,
        pod_urls: format!("http://127.0.0.1:{{ordinal+{base_port}}}"),
        discord_token: fake.options.token.clone(),
        discord_url: format!("http://{}", fake.addr),
        // The pods' slot is Discord's window plus the same 30% margin as against Discord.
        identify_slot_ms: args.identify_window_ms * 13 / 10,
        json: args.json,
        relay_base_port,
    }
}
