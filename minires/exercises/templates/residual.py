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
    """y = relu(F(x) + x);  backward: yours to write."""

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
        # TODO: return (dx, dw1, dgamma1, dbeta1, dw2, dgamma2, dbeta2).
        # Each saved op has backward(dy) returning one gradient per input of its forward:
        # self.relu2.backward(dy) -> ds;  self.bn2.backward(d) -> (d_in, dgamma, dbeta);
        # self.conv2.backward(d) -> (d_in, dw, None);  and so on back to self.conv1.
        raise NotImplementedError("write ResidualBlock.backward")


if __name__ == "__main__":
    from minires.exercises import main

    raise SystemExit(main(["check", "residual", "--file", __file__]))
