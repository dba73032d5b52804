// sqlx::migrate! embeds the migrations at compile time; rebuild when they
// change so a binary never runs a stale set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
