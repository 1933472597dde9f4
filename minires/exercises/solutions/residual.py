"""Exercise: the backward pass of a residual block, y = relu(F(x) + x) (lesson 7).

F(x) = bn2(conv2(relu(bn1(conv1(x))))), each a minires op whose forward and backward are already
written. Write backward(dy) by calling their backward methods in reverse order:
return (dx, dw1, dgamma1, dbeta1, dw2, dgamma2, dbeta2).
Check with `python -m minires.exercises check residual`.
"""

from minires import Function
from minires.ops.conv import Convolution2D
from minires.ops.elementwise import ReLU
from minires.ops.norm import BatchNormalization


class ResidualBlock(Function):
    """y = relu(F(x) + x);  dx = (dx through F) + (ds, unchanged through the shortcut), where
    ds = the gradient at s = F(x) + x."""

    def forward(self, x, w1, gamma1, beta1, w2, gamma2, beta2):
        # 3x3 convolutions with padding 1 keep H and W, so F(x) and x have the same shape.
        self.conv1 = Convolution2D(stride=(1, 1), padding=(1, 1))
        self.bn1 = BatchNormalization(None, None, training=True, momentum=0.1, eps=1e-5)
        self.relu1 = ReLU()
        self.conv2 = Convolution2D(stride=(1, 1), padding=(1, 1))
        self.bn2 = BatchNormalization(None, None, training=True, momentum=0.1, eps=1e-5)
        self.relu2 = ReLU()
        h = self.relu1.forward(self.bn1.forward(self.conv1.forward(x, w1, None), gamma1, beta1))
        f = self.bn2.forward(self.conv2.forward(h, w2, None), gamma2, beta2)  # F(x)
        return self.relu2.forward(f + x)  # s = F(x) + x, then y = relu(s)

    def backward(self, dy):
        ds = self.relu2.backward(dy)  # gradient at s = F(x) + x; s passes it to both terms
        df, dgamma2, dbeta2 = self.bn2.backward(ds)
        dh, dw2, _ = self.conv2.backward(df)
        dh = self.relu1.backward(dh)
        dc, dgamma1, dbeta1 = self.bn1.backward(dh)
        dx_branch, dw1, _ = self.conv1.backward(dc)
        dx = dx_branch + ds  # x was used twice (by F and by the shortcut): the gradients add
        return dx, dw1, dgamma1, dbeta1, dw2, dgamma2, dbeta2


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "residual", "--file", __file__]))
