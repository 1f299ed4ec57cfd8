//! The ClickHouse launcher against the real server: start, ping, write a row, stop (outage),
//! start again on the same data directory and read the row back.

use gatehouse_tests::clickhouse::ClickHouse;

#[test]
fn launcher_starts_stops_and_keeps_data() -> anyhow::Result<()> {
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    assert!(ch.ping());
    ch.query("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")?;
    ch.query("INSERT INTO t VALUES (42)")?;
    ch.stop();
    assert!(!ch.ping());
    ch.start()?;
    assert!(ch.ping());
    assert_eq!(ch.query("SELECT sum(x) FROM t")?.trim(), "42");
    Ok(())
}
