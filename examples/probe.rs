use einjit::Kernel;
use ndarray::ArrayD;
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(|s| s.as_str()).unwrap_or("gemm");
    let (src, shapes): (&str, Vec<(&str, Vec<usize>)>) = match which {
        "conv" => ("O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..56, j in 0..56", vec![("I", vec![1,64,56,56]), ("W", vec![64,64,3,3])]),
        _ => ("O[i,j] = A[i,k] * B[k,j]", vec![("A", vec![512,512]), ("B", vec![512,512])]),
    };
    let arrays: Vec<ArrayD<f32>> = shapes.iter().map(|(_, s)| ArrayD::from_elem(s.clone(), 0.5)).collect();
    let sh: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (*n, s.as_slice())).collect();
    let views: Vec<(&str, ndarray::ArrayViewD<f32>)> = shapes.iter().zip(&arrays).map(|((n, _), a)| (*n, a.view())).collect();
    for t in [1, 2] {
        let k = Kernel::compile(src, &sh).unwrap().with_threads(t);
        if t == 1 && args.len() > 2 { println!("{}", k.scheduled_ir()); }
        k.run(&views).unwrap();
        let mut best = f64::MAX;
        for _ in 0..10 { let s = Instant::now(); k.run(&views).unwrap(); best = best.min(s.elapsed().as_secs_f64()); }
        println!("{which} threads {t}: {:.3} ms", best * 1e3);
    }
}
