//! A TCP echo server: one coroutine per connection, io_uring underneath.
//!
//! ```text
//! cargo run -p ss-runtime --example echo                  # 127.0.0.1:7878, runs until killed
//! cargo run -p ss-runtime --example echo -- 127.0.0.1:9000
//! cargo run -p ss-runtime --example echo -- --demo        # serves itself 4 clients, then exits
//! ```
//!
//! Try it with `nc 127.0.0.1 7878`.

use std::net::SocketAddr;

use ss_runtime::net::{TcpListener, TcpStream};
use ss_runtime::{prio, Runtime};

/// Echoes until the peer closes; returns the bytes echoed.
async fn serve(stream: TcpStream) -> std::io::Result<usize> {
    let mut total = 0;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (n, b) = stream.recv(buf).await;
        let n = n?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        let (r, b) = stream.send_all(b).await;
        r?;
        buf = b;
    }
}

/// Accepts `limit` connections (or forever), spawning a coroutine for each.
async fn accept_loop(listener: TcpListener, limit: Option<usize>) -> std::io::Result<()> {
    let mut accepted = 0;
    while limit.is_none_or(|l| accepted < l) {
        let (stream, peer) = listener.accept().await?;
        accepted += 1;
        let _ = stream.set_nodelay(true);
        ss_runtime::spawn(
            async move {
                match serve(stream).await {
                    Ok(n) => eprintln!("{peer}: closed after {n} bytes"),
                    Err(e) => eprintln!("{peer}: {e}"),
                }
            },
            prio(2),
        );
    }
    Ok(())
}

/// Demo mode: four clients each send a few lines and check the echo.
async fn demo_clients(addr: SocketAddr) -> std::io::Result<()> {
    let clients: Vec<_> = (0..4)
        .map(|c| {
            ss_runtime::spawn(
                async move {
                    let stream = TcpStream::connect(addr).await?;
                    for line in 0..3 {
                        let msg = format!("client {c} line {line}\n").into_bytes();
                        let (r, _) = stream.send_all(msg.clone()).await;
                        r?;
                        let mut got = Vec::new();
                        while got.len() < msg.len() {
                            let (n, b) = stream.recv(Vec::with_capacity(64)).await;
                            if n? == 0 {
                                return Err(std::io::Error::other("server closed early"));
                            }
                            got.extend_from_slice(&b);
                        }
                        assert_eq!(got, msg);
                        print!("echoed: {}", String::from_utf8_lossy(&got));
                    }
                    Ok::<_, std::io::Error>(())
                },
                prio(3),
            )
        })
        .collect();
    for c in clients {
        c.await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut demo = false;
    let mut addr = "127.0.0.1:7878".to_owned();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--demo" => demo = true,
            "-h" | "--help" => {
                println!("usage: echo [--demo] [ADDR]   (default ADDR 127.0.0.1:7878)");
                return Ok(());
            }
            a => addr = a.to_owned(),
        }
    }
    if demo && !std::env::args().skip(1).any(|a| a.contains(':')) {
        addr = "127.0.0.1:0".to_owned(); // any free port
    }
    let rt = Runtime::builder().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr)?;
        let local = listener.local_addr()?;
        eprintln!("echo server on {local}");
        if demo {
            let server = ss_runtime::spawn(accept_loop(listener, Some(4)), prio(1));
            demo_clients(local).await?;
            server
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            Ok(())
        } else {
            accept_loop(listener, None).await
        }
    })
}
