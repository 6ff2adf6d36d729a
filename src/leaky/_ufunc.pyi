import numpy as np

leaky_relu: np.ufunc
leaky_relu_grad: np.ufunc
leaky_relu_backward: np.ufunc
