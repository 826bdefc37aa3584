//! `sluice top`: the dashboard's numbers in a terminal, refreshing, over
//! the API (so it watches a remote host as well as a local one). `q` or
//! Esc quits. `--once` prints one frame as text and exits (scripts, tests).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use serde_json::Value;

use super::client::Api;
use crate::ModuleInfo;
use crate::pipeline::ModuleStatus;
use crate::telemetry::lag::LagStatus;

/// One look at the host.
struct Sample {
    at: Instant,
    status: Value,
    modules: Vec<ModuleInfo>,
}

/// Events per second of each module between two samples: (in, applied).
type Rates = HashMap<String, (f64, f64)>;

fn sample(api: &Api) -> anyhow::Result<Sample> {
    Ok(Sample {
        at: Instant::now(),
        status: api.status()?,
        modules: api.modules()?,
    })
}

fn rates(before: Option<&Sample>, now: &Sample) -> Rates {
    let Some(before) = before else {
        return Rates::new();
    };
    let secs = now.at.duration_since(before.at).as_secs_f64().max(0.001);
    let old: HashMap<&str, (u64, u64)> = before
        .modules
        .iter()
        .filter_map(|m| {
            let c = m.metrics.as_ref()?;
            Some((m.name.as_str(), (c.events_in, c.applied)))
        })
        .collect();
    now.modules
        .iter()
        .filter_map(|m| {
            let c = m.metrics.as_ref()?;
            let (i, a) = old.get(m.name.as_str())?;
            Some((
                m.name.clone(),
                (
                    c.events_in.saturating_sub(*i) as f64 / secs,
                    c.applied.saturating_sub(*a) as f64 / secs,
                ),
            ))
        })
        .collect()
}

/// Run until `q`; with `once`, print one frame of `width` columns and return.
pub(super) fn run(api: &Api, interval: Duration, once: bool) -> anyhow::Result<()> {
    if once {
        let first = sample(api)?;
        std::thread::sleep(interval);
        let now = sample(api)?;
        let rates = rates(Some(&first), &now);
        let mut terminal = Terminal::new(TestBackend::new(160, 12 + 2 * now.modules.len() as u16))?;
        terminal.draw(|f| draw(f, &now, &rates, None))?;
        print!("{}", text(terminal.backend()));
        return Ok(());
    }
    let mut terminal = ratatui::init();
    let result = watch(api, interval, &mut terminal);
    ratatui::restore();
    result
}

fn watch<B: Backend>(
    api: &Api,
    interval: Duration,
    terminal: &mut Terminal<B>,
) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut last: Option<Sample> = None;
    loop {
        match sample(api) {
            Ok(now) => {
                let rates = rates(last.as_ref(), &now);
                terminal.draw(|f| draw(f, &now, &rates, None))?;
                last = Some(now);
            }
            // Keep showing what was seen, with why it is not fresh.
            Err(e) => match &last {
                Some(s) => {
                    let error = e.to_string();
                    terminal.draw(|f| draw(f, s, &Rates::new(), Some(&error)))?;
                }
                None => return Err(e),
            },
        }
        let until = Instant::now() + interval;
        while Instant::now() < until {
            if event::poll(until.saturating_duration_since(Instant::now()))?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
                && matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            {
                return Ok(());
            }
        }
    }
}

fn draw(f: &mut ratatui::Frame<'_>, s: &Sample, rates: &Rates, error: Option<&str>) {
    let [head, table, foot] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(5),
    ])
    .areas(f.area());
    let st = &s.status;
    let mut host = format!(
        "ready {}  outbox {}  lag {}  wasm memory {} / {} MiB",
        st["ready"],
        st["outbox_pending"],
        st["lag"],
        st["wasm_memory"]["used"].as_u64().unwrap_or(0) >> 20,
        st["wasm_memory"]["budget"].as_u64().unwrap_or(0) >> 20,
    );
    if let Some(k) = st.get("kafka") {
        host.push_str(&format!(
            "  kafka {}",
            if k["reachable"].as_bool() == Some(true) {
                "up".to_string()
            } else {
                format!("DOWN ({})", k["last_error"].as_str().unwrap_or("?"))
            }
        ));
    }
    if let Some(e) = error {
        host.push_str(&format!("  (refresh failed: {e})"));
    }
    f.render_widget(
        Paragraph::new(host).block(Block::bordered().title(" sluice top (q quits) ")),
        head,
    );
    let header = Row::new([
        "MODULE",
        "VERSION",
        "STATUS",
        "LAG ST",
        "LAG",
        "LAG S",
        "IN/S",
        "APPLIED/S",
        "APPLIED",
        "EMITTED",
        "RETRIES",
        "DEAD",
        "DLQ DEPTH",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = s.modules.iter().map(|m| {
        let c = m.metrics.clone().unwrap_or_default();
        let (rin, rap) = rates.get(&m.name).copied().unwrap_or_default();
        let lag: u64 = m.partitions.iter().map(|p| p.lag).sum();
        let lag_s = m
            .partitions
            .iter()
            .filter_map(|p| p.lag_seconds)
            .fold(0.0, f64::max);
        let status_style = match m.status {
            ModuleStatus::Running => Style::new(),
            ModuleStatus::Paused => Style::new().fg(Color::Yellow),
            _ => Style::new().fg(Color::Red),
        };
        let lag_status = m.lag_status.unwrap_or_default();
        let lag_style = match lag_status {
            LagStatus::Ok => Style::new().fg(Color::Green),
            LagStatus::Warn => Style::new().fg(Color::Yellow),
            _ => Style::new().fg(Color::Red),
        };
        Row::new([
            Cell::new(m.name.clone()),
            Cell::new(m.version.clone().unwrap_or_else(|| "-".into())),
            Cell::new(m.status.name()).style(status_style),
            Cell::new(lag_status.as_str()).style(lag_style),
            Cell::new(lag.to_string()),
            Cell::new(format!("{lag_s:.1}")),
            Cell::new(format!("{rin:.0}")),
            Cell::new(format!("{rap:.0}")),
            Cell::new(c.applied.to_string()),
            Cell::new(c.emitted.to_string()),
            Cell::new(c.retries.to_string()),
            Cell::new(c.dead_letters.to_string()),
            Cell::new(
                m.dead_letter_depth
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
        ])
    });
    let widths = [
        Constraint::Min(16),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" modules ")),
        table,
    );
    let mut failures: Vec<(u64, String)> = s
        .modules
        .iter()
        .flat_map(|m| {
            m.metrics
                .iter()
                .flat_map(|c| c.recent_failures.iter())
                .map(move |r| {
                    (
                        r.time_ms,
                        format!("{} {} {}: {}", m.name, r.class, r.id, r.message),
                    )
                })
        })
        .collect();
    failures.sort_by_key(|f| std::cmp::Reverse(f.0));
    let lines: Vec<String> = failures.into_iter().take(3).map(|(_, l)| l).collect();
    f.render_widget(
        Paragraph::new(lines.join("\n")).block(Block::bordered().title(" recent failures ")),
        foot,
    );
}

/// What a test backend shows, one line per row, trailing blanks trimmed.
fn text(backend: &TestBackend) -> String {
    let buffer = backend.buffer();
    let width = buffer.area.width as usize;
    let mut out = String::new();
    for row in buffer.content.chunks(width) {
        let line: String = row.iter().map(|c| c.symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
