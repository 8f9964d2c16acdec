//! A small shell on the console: `run NAME [PRIO] [ARG]` starts an embedded
//! program and waits for it; `exit` ends the shell (and the kernel shuts
//! QEMU down).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use ss_ulib::{print, println, sys};

fn read_line(line: &mut Vec<u8>) -> bool {
    line.clear();
    let mut b = [0u8; 1];
    loop {
        match sys::read(0, &mut b) {
            Ok(1) => match b[0] {
                b'\r' | b'\n' => {
                    println!();
                    return true;
                }
                0x7f | 0x08 => {
                    if line.pop().is_some() {
                        print!("\x08 \x08");
                    }
                }
                c => {
                    line.push(c);
                    let _ = sys::write(1, &[c]);
                }
            },
            _ => return false,
        }
    }
}

async fn main(_arg: usize) -> i32 {
    println!("SharedScheduler shell. Commands: run NAME [PRIO] [ARG], exit. Programs: utest, worker, hostile, crash, aio, and the servers kcuc, kcut, ktut, ktuc (run kcuc 3 HARTS).");
    let mut line = Vec::new();
    loop {
        print!("$ ");
        if !read_line(&mut line) {
            return 0;
        }
        let text = core::str::from_utf8(&line).unwrap_or("");
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["exit"] => return 0,
            ["run", name, rest @ ..] => {
                let prio = rest.first().and_then(|p| p.parse().ok()).unwrap_or(3);
                let arg = rest.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
                match sys::spawn(name, prio, arg) {
                    Ok(pid) => match sys::wait() {
                        Ok((p, code)) => println!("pid {p} (started as {pid}) exited with {code}"),
                        Err(e) => println!("wait: {e}"),
                    },
                    Err(e) => println!("spawn {name}: {e}"),
                }
            }
            _ => println!("unknown command; try: run worker 3 5, run hostile, exit"),
        }
    }
}

ss_ulib::main!(main);
