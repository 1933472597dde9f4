"""Exercise: the backward pass of batch normalisation, in training and evaluation mode (lesson 5).

Each channel is normalised with the batch's own mean and variance (training), or with the
running statistics given to the constructor (evaluation), then scaled and shifted:
y = gamma * x_hat + beta. Write backward(dy): return (dx, dgamma, dbeta) for both modes.
Check with `python -m minires.exercises check batchnorm`.
"""

from minires import Function


class BatchNorm(Function):
    """y = gamma * x_hat + beta,  x_hat = (x - mean) / sqrt(var + eps), statistics per channel;
    dx = gamma / (m * std) * (m * dy - sum(dy) - x_hat * sum(dy * x_hat)), m values per channel,
    in training; dx = gamma / std * dy in evaluation, where mean and var are constants."""

    def __init__(self, eps=1e-5, running_mean=None, running_var=None):
        self.eps = eps
        # Given running statistics, the layer is in evaluation mode and normalises with them.
        self.training = running_mean is None
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, gamma, beta):
        # Statistics per channel: over N for (N, C), over N, H, W for (N, C, H, W).
        self.axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)  # broadcasts a (C,) vector against x
        if self.training:
            mean = x.mean(axis=self.axes, keepdims=True)
            var = x.var(axis=self.axes, keepdims=True)  # biased, as in Ioffe & Szegedy, Alg. 1
        else:
            mean, var = self.running_mean.reshape(shape), self.running_var.reshape(shape)
        self.inv_std = 1 / (var + self.eps) ** 0.5
        self.x_hat = (x - mean) * self.inv_std
        self.gamma = gamma.reshape(shape)
        return self.gamma * self.x_hat + beta.reshape(shape)

    def backward(self, dy):
        m = dy.size // dy.shape[1]  # values per channel
        dgamma = (dy * self.x_hat).sum(axis=self.axes)
        dbeta = dy.sum(axis=self.axes)
        dx_hat = dy * self.gamma
        if not self.training:  # the running statistics are constants: one path, x -> x_hat
            return dx_hat * self.inv_std, dgamma, dbeta
        # Three paths from x to the loss: through x_hat directly, through the mean, through var.
        dx = self.inv_std / m * (
            m * dx_hat
            - dx_hat.sum(axis=self.axes, keepdims=True)
            - self.x_hat * (dx_hat * self.x_hat).sum(axis=self.axes, keepdims=True)
        )
        return dx, dgamma, dbeta


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "batchnorm", "--file", __file__]))
