fn main() {
    eprintln!("rust-baseline: not written yet");
    std::process::exit(1);
}
