//! `ss-top`: a live view of the SharedScheduler coordinator, in the manner of
//! `top`. It reads the coordinator's read-only query socket (see
//! `ss_coord::query`) every refresh and shows the registered processes, their
//! bitmaps, the global and multi bitmaps, yields per second and OS weights.
//! `--once` prints one snapshot as text (or `--json`) and exits.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
use ss_coord::default_socket_path;
use ss_coord::query::{self, bits_str, Snapshot};

const USAGE: &str = "\
usage: ss-top [options]

  --socket PATH      the coordinator's registration socket (default: as ss-coord's);
                     its query socket is PATH.query
  --query PATH       the query socket itself
  --interval-ms MS   refresh period (default 500)
  --once             print one snapshot as text and exit
  --json             with --once: print the snapshot as JSON
Keys: q, Esc or Ctrl-C quit.";

struct Args {
    query: PathBuf,
    interval: Duration,
    once: bool,
    json: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut socket = None;
    let mut query_path = None;
    let mut a = Args {
        query: PathBuf::new(),
        interval: Duration::from_millis(500),
        once: false,
        json: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || common::value(&mut it, flag);
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--query" => query_path = Some(PathBuf::from(value()?)),
            "--interval-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--interval-ms: `{v}` is not a number of milliseconds"))?;
                a.interval = Duration::from_millis(ms.max(10));
            }
            "--once" => a.once = true,
            "--json" => a.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    a.query = query_path
        .unwrap_or_else(|| query::query_path(&socket.unwrap_or_else(default_socket_path)));
    Ok(a)
}

fn main() -> ExitCode {
    let args = match common::args_or_usage("ss-top", USAGE, parse) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let result = if args.once {
        once(&args)
    } else {
        interactive(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ss-top: {e}");
            ExitCode::FAILURE
        }
    }
}

fn once(args: &Args) -> io::Result<()> {
    let snap = query::fetch(&args.query)?;
    if args.json {
        let text = serde_json::to_string_pretty(&snap).map_err(io::Error::other)?;
        println!("{text}");
    } else {
        print!("{}", snap.render_text());
    }
    Ok(())
}

fn interactive(args: &Args) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = refresh_loop(&mut terminal, args);
    ratatui::try_restore()?;
    result
}

fn refresh_loop(terminal: &mut DefaultTerminal, args: &Args) -> io::Result<()> {
    loop {
        let snap = query::fetch(&args.query).map_err(|e| e.to_string());
        terminal.draw(|f| draw(f, &snap, &args.query, args.interval))?;
        let deadline = Instant::now() + args.interval;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            if let Event::Key(k) = event::read()? {
                let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers == KeyModifiers::CONTROL;
                let quit = matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
                if k.kind == KeyEventKind::Press && quit {
                    return Ok(());
                }
            }
        }
    }
}

fn draw(f: &mut Frame<'_>, snap: &Result<Snapshot, String>, path: &Path, interval: Duration) {
    let [head, body] =
        Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(f.area());
    let title = format!(
        " ss-top — {} — every {} ms — q quits ",
        path.display(),
        interval.as_millis()
    );
    let s = match snap {
        Ok(snap) => &snap.status,
        Err(e) => {
            let p = Paragraph::new(vec![Line::from(e.as_str()).red()])
                .block(Block::bordered().title(title));
            f.render_widget(p, head);
            return;
        }
    };
    let n = s.levels.count();
    let weights = if s.weights.enabled {
        Line::from(s.weights.to_string())
    } else {
        Line::from(s.weights.note.as_str()).yellow()
    };
    let header = Paragraph::new(vec![
        Line::from(vec![
            "global ".into(),
            bits_str(s.view.global.bits(), n).bold(),
            "   multi ".into(),
            bits_str(s.view.multi.bits(), n).bold(),
            format!("   seq {}   levels {}", s.seq, n).into(),
        ]),
        Line::from(format!(
            "processes {}   refused {}   violations {}   exited {}   disconnected {}   ticks {}",
            s.clients.len(),
            s.refused,
            s.violations,
            s.exited,
            s.disconnected,
            s.ticks
        )),
        weights,
    ])
    .block(Block::bordered().title(title));
    f.render_widget(header, head);

    let rows = s.clients.iter().map(|c| {
        let program = c
            .exe
            .as_deref()
            .and_then(Path::file_name)
            .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned());
        let ready = if c.header_ok {
            bits_str(c.raw, n)
        } else {
            "bad page".into()
        };
        let weight = match &c.weight_error {
            Some(e) => format!("{} ({e})", c.os_weight),
            None => c.os_weight.to_string(),
        };
        let row = Row::new(vec![
            c.pid.to_string(),
            c.uid.to_string(),
            program,
            c.ceiling.level().to_string(),
            ready,
            bits_str(c.effective, n),
            if c.demoted { "yes" } else { "no" }.into(),
            format!("{}%", c.budget_percent),
            if c.stalled { "yes" } else { "no" }.into(),
            c.yields_per_sec.to_string(),
            weight,
        ]);
        if c.demoted || c.stalled || !c.header_ok {
            row.style(Style::new().yellow())
        } else {
            row
        }
    });
    let w = u16::from(n).max(9);
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Length(4),
            Constraint::Length(w),
            Constraint::Length(w),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Min(8),
        ],
    )
    .header(
        Row::new(vec![
            "PID",
            "UID",
            "PROGRAM",
            "CEIL",
            "READY",
            "EFFECTIVE",
            "DEMOTED",
            "BUDGET",
            "STALLED",
            "YIELDS/S",
            "OS WEIGHT",
        ])
        .style(Style::new().add_modifier(Modifier::REVERSED)),
    )
    .block(Block::bordered().title(" registered processes "));
    f.render_widget(table, body);
}
