//! Every operation of the README's table, as a formula and input shapes.

/// A formula and the shapes of its inputs.
pub type Operation = (&'static str, String, Vec<(&'static str, Vec<usize>)>);

/// Every operation of the README's table, for a size `n`.
pub fn operations(n: usize) -> Vec<Operation> {
    let m = n + 2;
    let ops: Vec<Operation> = vec![
        (
            "gemv",
            "O[i] = A[i,k] * B[k]".into(), vec![("A", vec![n, m]), ("B", vec![m])]),
        (
            "gemm",
            "O[i,j] = A[i,k] * B[k,j]".into(), vec![("A", vec![n, m]), ("B", vec![m, n + 5])]),
        (
            "gemm_transposed",
            "O[i,j] = A[k,i] * B[j,k]".into(), vec![("A", vec![m, n]), ("B", vec![n + 1, m])]),
        (
            "batched_matmul",
            "O[b,i,j] = A[b,i,k] * B[b,k,j]".into(), vec![("A", vec![2, n, 3]), ("B", vec![2, 3, m])]),
        (
            "bilinear",
            "O[i,j] = A[i,k] * B[j,k,l] * C[i,l]".into(), vec![("A", vec![n, 3]), ("B", vec![m, 3, 4]), ("C", vec![n, 4])]),
        (
            "chain_gcn",
            "O[n,h] = A[n,m] * X[m,c] * W[c,h]".into(), vec![("A", vec![n, m]), ("X", vec![m, 3]), ("W", vec![3, n])]),
        (
            "outer_product",
            "O[i,j] = A[i] * B[j]".into(), vec![("A", vec![n]), ("B", vec![m])]),
        (
            "diagonal",
            "O[i] = A[i,i]".into(), vec![("A", vec![n, n])]),
        (
            "conv1d_padded",
            format!("O[b,k,i] = I[b,c,i+rx-1] * W[k,c,rx] where i in 0..{m}"), vec![("I", vec![2, 3, m]), ("W", vec![n, 3, 3])]),
        (
            "conv1d_strided_dilated",
            "O[b,k,i] = I[b,c,2*i+2*rx] * W[k,c,rx]".into(), vec![("I", vec![1, 2, 2 * m + 3]), ("W", vec![3, 2, 2])]),
        (
            "conv2d_same",
            format!("O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..{n}, j in 0..{m}"),
            vec![("I", vec![1, 3, n, m]), ("W", vec![5, 3, 3, 3])],
        ),
        (
            "conv2d_stride2",
            format!("O[b,k,i,j] = I[b,c,2*i+rx-1,2*j+ry-1] * W[k,c,rx,ry] where i in 0..{}, j in 0..{}", n.div_ceil(2), m.div_ceil(2)),
            vec![("I", vec![1, 2, n, m]), ("W", vec![3, 2, 3, 3])],
        ),
        (
            "conv2d_dilated",
            format!("O[b,k,i,j] = I[b,c,i+2*rx-2,j+2*ry-2] * W[k,c,rx,ry] where i in 0..{n}, j in 0..{m}"),
            vec![("I", vec![1, 2, n, m]), ("W", vec![3, 2, 3, 3])],
        ),
        (
            "conv3d_same",
            format!("O[b,k,i,j,l] = I[b,c,i+rx-1,j+ry-1,l+rz-1] * W[k,c,rx,ry,rz] where i in 0..3, j in 0..{n}, l in 0..{m}"),
            vec![("I", vec![1, 2, 3, n, m]), ("W", vec![2, 2, 3, 3, 3])],
        ),
        (
            "true_convolution_full",
            format!("O[i] = I[i-rx] * W[rx] where i in 0..{}", n + 2), vec![("I", vec![n]), ("W", vec![3])]),
        (
            "conv_transpose2d_scatter",
            "O[b,k,2*i+rx-1,2*j+ry-1] += I[b,c,i,j] * W[c,k,rx,ry]".into(), vec![("I", vec![1, 3, n, 3]), ("W", vec![3, 2, 4, 4]), ("O", vec![1, 2, 2 * n, 6])]),
        (
            "conv_transpose1d_scatter",
            "O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]".into(), vec![("I", vec![2, 3, n]), ("W", vec![3, 4, 4]), ("O", vec![2, 4, 2 * n])]),
        (
            "conv_transpose3d_scatter",
            "O[b,k,2*i+rx-1,2*j+ry-1,2*l+rz-1] += I[b,c,i,j,l] * W[c,k,rx,ry,rz]".into(),
            vec![("I", vec![1, 2, 2, 3, n]), ("W", vec![2, 2, 4, 4, 4]), ("O", vec![1, 2, 4, 6, 2 * n])],
        ),
        (
            "conv_transpose1d_gather",
            format!("O[b,k,i] = I[b,c,i+rx-3] * W[c,k,3-rx] where i in 0..{}, rx in 0..4", n + 3), vec![("I", vec![1, 2, n]), ("W", vec![2, 3, 4])]),
        (
            "grouped_conv",
            "O[b,4*g+k,i,j] = I[b,2*g+c,i+rx,j+ry] * W[4*g+k,c,rx,ry] where g in 0..2, k in 0..4".into(),
            vec![("I", vec![1, 4, n + 2, m + 2]), ("W", vec![8, 2, 3, 3])],
        ),
        (
            "depthwise_conv",
            format!("O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..{n}, j in 0..{m}"),
            vec![("I", vec![1, 5, n, m]), ("W", vec![5, 1, 3, 3])],
        ),
        (
            "conv1x1",
            "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0]".into(), vec![("I", vec![1, 4, n, m]), ("W", vec![6, 4, 1, 1])]),
        (
            "max_pool",
            "O[b,c,i,j] max= I[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2".into(), vec![("I", vec![1, 3, 2 * n, m])]),
        (
            "avg_pool",
            "T[b,c,i,j] = I[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2\nO[b,c,i,j] = T[b,c,i,j] * 0.25".into(), vec![("I", vec![1, 3, 2 * n, m])]),
        (
            "global_avg_pool",
            "O[b,c] = I[b,c,i,j] / 9".into(), vec![("I", vec![2, 3, n, m])]),
        (
            "global_max_pool",
            "O[b,c] max= I[b,c,i,j]".into(), vec![("I", vec![2, 3, n, m])]),
        (
            "conv_bias_relu",
            format!("T[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..{n}, j in 0..{m}\nO[b,k,i,j] = relu(T[b,k,i,j] + Bias[k])"),
            vec![("I", vec![1, 2, n, m]), ("W", vec![3, 2, 3, 3]), ("Bias", vec![3])],
        ),
        (
            "channel_shuffle",
            "O[b,2*c+g,i,j] = I[b,4*g+c,i,j] where g in 0..2, c in 0..4".into(), vec![("I", vec![1, 8, n, m])]),
        (
            "depthwise_separable",
            format!("T[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * D[c,0,rx,ry] where i in 0..{n}, j in 0..{m}\nO[b,k,i,j] = T[b,c,i,j] * P[k,c,0,0]"),
            vec![("I", vec![1, 3, n, m]), ("D", vec![3, 1, 3, 3]), ("P", vec![4, 3, 1, 1])],
        ),
        (
            "spatially_separable",
            format!("T[b,c,i,j] = I[b,c,i+rx-1,j] * U[rx] where i in 0..{n}\nO[b,c,i,j] = T[b,c,i,j+ry-1] * V[ry] where j in 0..{m}"),
            vec![("I", vec![1, 2, n, m]), ("U", vec![3]), ("V", vec![3])],
        ),
        (
            "activations",
            "O[i] = sigmoid(A[i]) + tanh(A[i]) * exp(-abs(A[i])) - log(1 + A[i] * A[i]) + sqrt(abs(A[i])) + max(A[i], 0.1) + min(A[i], -0.1)".into(), vec![("A", vec![m])]),
        (
            "min_plus_product",
            "O[i,j] min= A[i,k] - B[k,j]".into(), vec![("A", vec![n, 3]), ("B", vec![3, m])]),
        (
            "versions",
            "X[i] = X[i] * 2\nX[i] = X[2 - i] + 1".into(), vec![("X", vec![3])]),
    ];
    ops
}
