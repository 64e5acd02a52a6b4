//! `cdrflow broker` in its own process: `cdrflow generate --brokers` produces to it, a
//! consumer reads every message back, and the broker is killed by PID.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const BIN: &str = env!("CARGO_BIN_EXE_cdrflow");

#[test]
fn broker_process_carries_the_generated_feed() {
    let mut broker = Command::new(BIN)
        .args(["broker", "--brokers", "3", "--topic", "cdrs", "--partitions", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cdrflow broker starts");
    let mut first = String::new();
    BufReader::new(broker.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let bootstrap = first.trim().to_owned();
    assert!(
        bootstrap.contains("127.0.0.1:") || bootstrap.contains("localhost:"),
        "bootstrap address first: {bootstrap:?}"
    );

    let n = 20_000usize;
    let status = Command::new(BIN)
        .args(["generate", "--cdrs", &n.to_string(), "--seed", "3", "--brokers", &bootstrap, "--topic", "cdrs"])
        .status()
        .unwrap();
    assert!(status.success());

    // Everything that was produced, read back from every partition.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "broker-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("cdrs", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("no consume error");
            *got.entry(m.payload().unwrap().to_vec()).or_default() += 1;
            count += 1;
        }
    }
    // Nothing more arrives than was sent.
    assert!(consumer.poll(Duration::from_millis(500)).is_none());
    let file = Command::new(BIN).args(["generate", "--cdrs", &n.to_string(), "--seed", "3"]).output().unwrap().stdout;
    let mut want: HashMap<Vec<u8>, usize> = HashMap::new();
    for line in file.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        *want.entry(line.to_vec()).or_default() += 1;
    }
    assert_eq!(count, n);
    assert!(got == want, "the topic holds exactly the generated feed");

    // Killed by PID, the broker is gone and its port refuses.
    let pid = broker.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = broker.wait().unwrap();
    assert!(!status.success());
    let port: u16 = bootstrap.split(',').next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens after the kill");
}
