throw new Error('load failed');
