use intr_explorer::model::conv_cpu::*;
use std::time::Instant;
fn main() {
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    // (cin, cout, k, stride, pad, h, w, count)
    let cases = [
        (3, 64, 7, 2, 3, 800, 1028, 1),
        (64, 64, 1, 1, 0, 200, 257, 1),
        (256, 64, 1, 1, 0, 200, 257, 2),
        (64, 64, 3, 1, 1, 200, 257, 3),
        (64, 256, 1, 1, 0, 200, 257, 4),
        (256, 128, 1, 1, 0, 200, 257, 1),
        (128, 128, 3, 2, 1, 200, 257, 1),
        (128, 128, 3, 1, 1, 100, 129, 3),
        (128, 512, 1, 1, 0, 100, 129, 4),
        (256, 512, 1, 2, 0, 200, 257, 1),
        (512, 128, 1, 1, 0, 100, 129, 3),
        (512, 256, 1, 1, 0, 100, 129, 1),
        (256, 256, 3, 2, 1, 100, 129, 1),
        (256, 256, 3, 1, 1, 50, 65, 5),
        (256, 1024, 1, 1, 0, 50, 65, 6),
        (1024, 256, 1, 1, 0, 50, 65, 5),
        (512, 1024, 1, 2, 0, 100, 129, 1),
        (1024, 512, 1, 1, 0, 50, 65, 1),
        (512, 512, 3, 2, 1, 50, 65, 1),
        (512, 512, 3, 1, 1, 25, 33, 2),
        (512, 2048, 1, 1, 0, 25, 33, 3),
        (2048, 512, 1, 1, 0, 25, 33, 2),
        (1024, 2048, 1, 2, 0, 50, 65, 1),
    ];
    let mut total = 0.0; let mut total_fl = 0.0;
    for (cin, cout, k, s, p, h, w, count) in cases {
        let kern = ConvKernel::from_oihw(&vec![0.01; cout*cin*k*k], vec![0.0; cout], (cout, cin, k), (s, p, 1));
        let x = Fmap { h, w, c: cin, data: vec![0.5; h*w*cin] };
        let _ = conv2d(&x, &kern, None, true);
        let t = Instant::now();
        let n = 3;
        for _ in 0..n { let _ = conv2d(&x, &kern, None, true); }
        let dt = t.elapsed().as_secs_f64() / n as f64;
        let (ho, wo) = kern.out_size(h, w);
        let fl = 2.0 * (ho*wo*cout*cin*k*k) as f64;
        total += dt * count as f64; total_fl += fl * count as f64;
        println!("{cin:>5}->{cout:<5} k{k} s{s} {h}x{w}: {:.2} ms  {:.0} GFLOP/s  x{count}", dt*1e3, fl/dt/1e9);
    }
    println!("total {:.3} s, {:.1} GFLOP, {:.0} GFLOP/s", total, total_fl/1e9, total_fl/total/1e9);
}
